"""Formats: every source shape parsed from a real file, detection, forcing, columns/tags, problems."""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from prefkit.data.examples import ExampleError, Location, Message, PreferenceExample, SFTExample
from prefkit.data.formats import (
    FORMATS,
    FormatError,
    apply_columns,
    detect_format,
    get_format,
    parse_file,
    write_examples,
)

SYS = Message("system", "あなたは親切なアシスタントです。")
U1, A1 = Message("user", "Hi"), Message("assistant", "Hello!")
U2 = Message("user", "日本の首都は？")


def _jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _kinds(parsed) -> list[tuple[int | None, str]]:
    return [(p.location.line, p.kind) for p in parsed.problems]


# One record per format, all meaning the same conversation: system, a first exchange, then U2.
PREF_RECORDS: dict[str, dict[str, Any]] = {
    "prompt-chat": {
        "prompt": [SYS.to_dict(), U1.to_dict(), A1.to_dict(), U2.to_dict()],
        "chosen": [{"role": "assistant", "content": "東京です。"}],
        "rejected": [{"role": "assistant", "content": "大阪です。"}],
    },
    "sharegpt-pair": {
        "system": SYS.content,
        "conversations": [
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Hello!"},
            {"from": "human", "value": "日本の首都は？"},
            {"from": "gpt", "value": "東京です。"},
        ],
        "rejected_conversations": [
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Hello!"},
            {"from": "human", "value": "日本の首都は？"},
            {"from": "gpt", "value": "大阪です。"},
        ],
    },
    "sharegpt": {
        "conversations": [
            {"from": "system", "value": SYS.content},
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Hello!"},
            {"from": "human", "value": "日本の首都は？"},
        ],
        "chosen": {"from": "gpt", "value": "東京です。"},
        "rejected": {"from": "gpt", "value": "大阪です。"},
    },
    "alpaca": {
        "system": SYS.content,
        "history": [["Hi", "Hello!"]],
        "instruction": "日本の首都は？",
        "input": "",
        "chosen": "東京です。",
        "rejected": "大阪です。",
    },
}
PREF_EXPECTED = ((SYS, U1, A1, U2), "東京です。", "大阪です。")

SFT_RECORDS: dict[str, dict[str, Any]] = {
    "alpaca": {
        "system": SYS.content,
        "history": [["Hi", "Hello!"]],
        "instruction": "日本の首都は？",
        "output": "東京です。",
    },
    "messages": {
        "messages": [
            SYS.to_dict(),
            U1.to_dict(),
            A1.to_dict(),
            U2.to_dict(),
            {"role": "assistant", "content": "東京です。"},
        ]
    },
    "sharegpt": {
        "system": SYS.content,
        "conversations": [
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Hello!"},
            {"from": "human", "value": "日本の首都は？"},
            {"from": "gpt", "value": "東京です。"},
        ],
    },
}
SFT_EXPECTED = (SYS, U1, A1, U2, Message("assistant", "東京です。"))


@pytest.mark.parametrize("name", list(PREF_RECORDS))
def test_preference_formats_parse_and_are_detected(tmp_path: Path, name: str) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [PREF_RECORDS[name], PREF_RECORDS[name]])
    parsed = parse_file(path)
    assert (parsed.format, parsed.stage) == (name, "dpo")
    assert parsed.problems == [] and parsed.records == 2
    ex = parsed.examples[1]
    assert isinstance(ex, PreferenceExample)
    assert (ex.prompt, ex.chosen, ex.rejected) == PREF_EXPECTED
    assert ex.location == Location(str(path), line=2)


def test_prompt_text_parses_and_is_detected(tmp_path: Path) -> None:
    # The seeds' shape: plain strings, no system.
    path = _jsonl(
        tmp_path / "d.jsonl",
        [
            {"prompt": "日本の首都は？", "chosen": "東京", "rejected": "大阪"},
            {"prompt": "p", "chosen": "", "rejected": "r", "system": "s"},
        ],
    )
    parsed = parse_file(path)
    assert (parsed.format, parsed.stage) == ("prompt-text", "dpo")
    assert parsed.examples[0].prompt == (U2,)
    assert (parsed.examples[0].chosen, parsed.examples[0].rejected) == ("東京", "大阪")
    assert parsed.examples[1].prompt == (Message("system", "s"), Message("user", "p"))
    assert parsed.examples[1].chosen == ""  # emptiness is validate's business, kept as is


@pytest.mark.parametrize("name", list(SFT_RECORDS))
def test_sft_formats_parse_and_are_detected(tmp_path: Path, name: str) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [SFT_RECORDS[name]])
    parsed = parse_file(path)
    assert (parsed.format, parsed.stage) == (name, "sft")
    assert parsed.problems == []
    assert isinstance(parsed.examples[0], SFTExample)
    assert parsed.examples[0].messages == SFT_EXPECTED


def test_alpaca_input_goes_on_its_own_line(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [{"instruction": "Translate:", "input": "猫", "output": "cat"}])
    (ex,) = parse_file(path).examples
    assert ex.messages == (Message("user", "Translate:\n猫"), Message("assistant", "cat"))


def test_chat_replies_may_be_a_dict_or_a_string_and_prompt_a_string(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "d.jsonl",
        [
            {
                "prompt": [{"role": "user", "content": "q"}],
                "chosen": {"role": "assistant", "content": "a"},
                "rejected": "b",
            },
        ],
    )
    (ex,) = parse_file(path).examples
    assert (ex.prompt, ex.chosen, ex.rejected) == ((Message("user", "q"),), "a", "b")
    ex2 = get_format("prompt-chat").parse({"prompt": "q", "chosen": "a", "rejected": "b"}, Location("f"))
    assert ex2.prompt == (Message("user", "q"),)


def test_prompt_chat_from_csv_cells_holding_json(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "chosen", "rejected"])
        w.writerow(
            [
                json.dumps([U2.to_dict()], ensure_ascii=False),
                json.dumps([{"role": "assistant", "content": "東京"}], ensure_ascii=False),
                "[1, 2] is not a message list, so it stays text",
            ]
        )
    parsed = parse_file(path)
    assert parsed.format == "prompt-chat" and parsed.problems == []
    ex = parsed.examples[0]
    assert (ex.prompt, ex.chosen) == ((U2,), "東京")
    assert ex.rejected == "[1, 2] is not a message list, so it stays text"


def test_sharegpt_from_csv_with_history_cell(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('instruction,history,chosen,rejected\nq,"[[""u"", ""a""]]",c,r\n', encoding="utf-8")
    (ex,) = parse_file(path).examples
    assert ex.prompt == (Message("user", "u"), Message("assistant", "a"), Message("user", "q"))


# -- detection ------------------------------------------------------------------------------------


def test_detection_prefers_the_most_specific_match() -> None:
    conv = [{"from": "human", "value": "q"}]
    assert detect_format([{"conversations": conv}]).id == "sft:sharegpt"
    assert detect_format([{"conversations": conv, "chosen": {}, "rejected": {}}]).id == "dpo:sharegpt"
    pair = {"conversations": conv, "rejected_conversations": conv, "chosen": "x", "rejected": "y"}
    assert detect_format([pair]).id == "dpo:sharegpt-pair"
    assert detect_format([{"prompt": [], "chosen": [], "rejected": []}]).id == "dpo:prompt-chat"
    assert detect_format([{"prompt": "p", "chosen": "c", "rejected": "r"}]).id == "dpo:prompt-text"
    assert detect_format([{"instruction": "i", "output": "o"}]).id == "sft:alpaca"
    assert detect_format([{"instruction": "i", "chosen": "c", "rejected": "r"}]).id == "dpo:alpaca"
    assert detect_format([{"messages": []}]).id == "sft:messages"


def test_detection_skips_non_dicts_and_follows_the_majority() -> None:
    conv = [{"from": "human", "value": "q"}]
    ranked = {"conversations": conv, "chosen": {}, "rejected": {}}
    broken = {"conversations": conv, "chosen": {}}  # alone this would look like sft sharegpt
    assert detect_format(["text", [1], ranked, broken, ranked]).id == "dpo:sharegpt"


def test_detection_with_stage_only_considers_that_stage() -> None:
    record = {"conversations": [], "chosen": {}, "rejected": {}}
    assert detect_format([record], "sft").id == "sft:sharegpt"
    pattern = r"(?s)keys instruction, output \(they look like sft:alpaca.*dpo prompt-text: prompt, chosen"
    with pytest.raises(FormatError, match=pattern):
        detect_format([{"instruction": "i", "output": "o"}], "dpo", source="x.jsonl")


def test_undetectable_file_names_keys_and_formats(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(FormatError) as err:
        parse_file(path)
    message = str(err.value)
    assert str(path) in message and "question, answer" in message
    assert "sft messages: messages" in message
    assert "dpo sharegpt-pair: conversations, rejected_conversations" in message


# -- forcing ----------------------------------------------------------------------------------------


def test_get_format_names_aliases_and_did_you_mean() -> None:
    assert get_format("alpaca", "dpo").id == "dpo:alpaca"
    assert get_format("sft:alpaca").id == "sft:alpaca"
    assert get_format("SHAREGPT_PAIR").id == "dpo:sharegpt-pair"
    assert get_format("standard").id == "dpo:prompt-text"
    assert get_format("conversational").id == "dpo:prompt-chat"
    assert get_format("openai").id == "sft:messages"
    with pytest.raises(FormatError, match="both stages"):
        get_format("alpaca")
    with pytest.raises(FormatError, match="did you mean 'prompt-chat'"):
        get_format("prompt-chta")
    with pytest.raises(FormatError, match="unknown stage"):
        get_format("alpaca", "ppo")
    assert len({f.id for f in FORMATS}) == len(FORMATS)


def test_forced_format_overrides_detection(tmp_path: Path) -> None:
    # Looks like sft sharegpt to detection; forced as dpo sharegpt-pair it parses as a pair.
    record = {
        "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
        "rejected_conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "b"}],
    }
    path = _jsonl(tmp_path / "d.jsonl", [record])
    parsed = parse_file(path, format="sft:sharegpt")
    assert parsed.format == "sharegpt" and parsed.stage == "sft"
    assert parsed.examples[0].messages[-1].content == "a"
    forced = parse_file(path, format="sharegpt", stage="dpo")  # dpo sharegpt: chosen is missing
    assert _kinds(forced) == [(1, "missing_key")]
    assert "missing key 'chosen' (format dpo sharegpt needs conversations, chosen, rejected" in (
        forced.problems[0].message
    )


def test_forced_ambiguous_name_is_resolved_by_the_records(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [{"instruction": "i", "chosen": "c", "rejected": "r"}])
    parsed = parse_file(path, format="alpaca")
    assert (parsed.format, parsed.stage) == ("alpaca", "dpo")
    with pytest.raises(FormatError, match="did you mean"):
        parse_file(path, format="alpacca")


# -- columns and tags -------------------------------------------------------------------------------


def test_apply_columns_llamafactory_names() -> None:
    record = {"q": "Q", "ctx": "C", "ans": "A", "other": 1}
    out = apply_columns(record, {"prompt": "q", "query": "ctx", "response": "ans"}, None)
    assert out == {"instruction": "Q", "input": "C", "output": "A", "other": 1}
    # Swapping two columns works because the result is built from the original record.
    assert apply_columns(
        {"chosen": "x", "rejected": "y"}, {"chosen": "rejected", "rejected": "chosen"}, None
    ) == {"chosen": "y", "rejected": "x"}
    # A mapped column the record lacks leaves our key missing, to be reported as such.
    assert apply_columns({"instruction": "stale"}, {"prompt": "q"}, None) == {}


def test_apply_tags_turns_any_spelling_into_role_content() -> None:
    tags = {"role_tag": "speaker", "content_tag": "text", "user_tag": "customer", "assistant_tag": "agent"}
    record = {"conversations": [{"speaker": "customer", "text": "q"}, {"speaker": "agent", "text": "a"}]}
    out = apply_columns(record, None, tags)
    assert out["conversations"] == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    with pytest.raises(FormatError, match="unknown tags role"):
        apply_columns(record, None, {"role": "x"})


def test_columns_and_tags_through_parse_file(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "d.jsonl",
        [
            {
                "dialog": [
                    {"role": "system", "content": "s"},
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a"},
                ]
            },
        ],
    )
    tags = {
        "role_tag": "role",
        "content_tag": "content",
        "user_tag": "user",
        "assistant_tag": "assistant",
        "system_tag": "system",
    }
    parsed = parse_file(path, stage="sft", format="sharegpt", columns={"messages": "dialog"}, tags=tags)
    assert parsed.problems == []
    assert parsed.examples[0].messages == (
        Message("system", "s"),
        Message("user", "q"),
        Message("assistant", "a"),
    )


def test_prompt_text_columns_with_forced_format(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [{"question": "q", "good": "g", "bad": "b"}])
    parsed = parse_file(
        path, format="prompt-text", columns={"prompt": "question", "chosen": "good", "rejected": "bad"}
    )
    ex = parsed.examples[0]
    assert (ex.prompt, ex.chosen, ex.rejected) == ((Message("user", "q"),), "g", "b")


# -- problems ---------------------------------------------------------------------------------------


def test_each_problem_kind_at_its_line(tmp_path: Path) -> None:
    good = {
        "conversations": [{"from": "human", "value": "q"}],
        "chosen": {"from": "gpt", "value": "c"},
        "rejected": {"from": "gpt", "value": "r"},
    }
    lines = [
        json.dumps(good),  # 1 ok
        json.dumps({**good, "chosen": {"from": "gpt", "value": 7}}),  # 2 non_string
        json.dumps(
            {
                **good,
                "conversations": [
                    {"from": "human", "value": "q"},
                    {"from": "gpt", "value": "a"},
                    {"from": "function_call", "value": "{}"},
                ],
            }
        ),  # 3
        json.dumps(
            {
                "conversations": good["conversations"],
                "chosen": good["chosen"],
                "rejected_x": 1,
                "rejected": None,
            }
        ),  # 4 missing_key (null)
        '"a bare string"',  # 5 not_object
        json.dumps(
            {**good, "conversations": [{"from": "human", "value": "q"}, {"from": "system", "value": "s"}]}
        ),  # 6 system not first
        json.dumps(
            {**good, "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
        ),  # 7 ends with assistant
        "{broken",  # 8 malformed_json
        json.dumps({**good, "chosen": {"from": "human", "value": "c"}}),  # 9 reply not assistant
        json.dumps({**good, "conversations": "not a list"}),  # 10 wrong_type
        json.dumps(good),  # 11 ok
    ]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    parsed = parse_file(path)
    assert parsed.format == "sharegpt" and parsed.records == 11
    assert [e.location.line for e in parsed.examples] == [1, 11]
    assert _kinds(parsed) == [
        (2, "non_string"),
        (3, "unknown_role"),
        (4, "missing_key"),
        (5, "not_object"),
        (6, "bad_turns"),
        (7, "bad_turns"),
        (8, "malformed_json"),
        (9, "bad_turns"),
        (10, "wrong_type"),
    ]
    messages = [p.message for p in parsed.problems]
    assert messages[0] == "chosen.value: expected a string, got int"
    assert messages[1] == (
        "unknown role 'function_call' in conversations[2] "
        "(expected one of user, assistant, system; or human, gpt)"
    )
    assert messages[3] == "expected a JSON object (a record with keys), got string"
    assert "conversations[1]: a system message may only come first" in messages[4]
    assert "must end with a user turn, but it ends with an assistant turn" in messages[5]
    assert str(parsed.problems[0]) == f"{path}:2: chosen.value: expected a string, got int"


def test_non_string_top_level_field(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "chosen": 1, "rejected": "r"}])
    (problem,) = parse_file(path).problems
    assert (problem.kind, problem.message) == ("non_string", "chosen: expected a string, got int")


def test_missing_key_names_the_key_and_the_format(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "d.jsonl",
        [{"prompt": "p", "chosen": "c", "rejected": "r"}, {"prompt": "p", "chosen": "c"}],
    )
    parsed = parse_file(path)
    assert _kinds(parsed) == [(2, "missing_key")]
    assert parsed.problems[0].message.startswith(
        "missing key 'rejected' (format dpo prompt-text needs prompt, chosen, rejected"
    )


def test_sharegpt_pair_names_the_first_differing_turn(tmp_path: Path) -> None:
    record = json.loads(json.dumps(PREF_RECORDS["sharegpt-pair"]))
    record["rejected_conversations"][1]["value"] = "Hey!"
    path = _jsonl(tmp_path / "d.jsonl", [record])
    (problem,) = parse_file(path).problems
    assert problem.kind == "bad_turns"
    assert problem.message.startswith("conversations[1] and rejected_conversations[1] differ")


def test_system_key_and_a_different_leading_system_message_conflict() -> None:
    fmt = get_format("prompt-chat")
    record = {
        "system": "a",
        "prompt": [{"role": "system", "content": "b"}, {"role": "user", "content": "q"}],
        "chosen": "c",
        "rejected": "r",
    }
    with pytest.raises(ExampleError) as err:
        fmt.parse(record, Location("f"))
    assert err.value.kind == "bad_turns"


def test_one_megabyte_field_parses(tmp_path: Path) -> None:
    big = "長" * 1_000_000
    path = _jsonl(tmp_path / "d.jsonl", [{"prompt": big, "chosen": "c", "rejected": "r"}])
    parsed = parse_file(path)
    assert parsed.problems == [] and parsed.examples[0].prompt[0].content == big


def test_parquet_problems_are_located_by_row(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    rows = [{"prompt": "p", "chosen": "c", "rejected": "r"}, {"prompt": "p", "chosen": "c", "rejected": None}]
    pq.write_table(pa.Table.from_pylist(rows), path)
    parsed = parse_file(path)
    assert [e.location.row for e in parsed.examples] == [1]
    assert [(p.location.row, p.kind) for p in parsed.problems] == [(2, "missing_key")]


def test_garbage_values_only_ever_raise_example_error() -> None:
    # Whatever a record holds, a parser answers with an example or an ExampleError -- no traceback.
    rng = random.Random(0)
    values: list[Any] = [
        None,
        1,
        2.5,
        True,
        "",
        "text",
        "[",
        "[]",
        "{}",
        '[{"role": "user"}]',
        [],
        {},
        [1],
        [None],
        [[]],
        [["a"]],
        [["a", "b"]],
        [{"from": "gpt"}],
        [{"role": 3, "content": "x"}],
        [{"value": "x"}],
        {"role": "user", "content": "x"},
        {"from": "gpt", "value": "x"},
        [{"role": "user", "content": "x"}],
    ]
    outcomes: Counter[str] = Counter()
    for fmt in FORMATS:
        keys = [*fmt.required_keys, *fmt.optional_keys]
        for _ in range(300):
            record = {k: rng.choice(values) for k in keys if rng.random() < 0.9}
            try:
                fmt.parse(record, Location("f", line=1))
                outcomes["ok"] += 1
            except ExampleError as err:
                outcomes[err.kind] += 1
    assert {"ok", "missing_key", "non_string", "wrong_type", "unknown_role", "bad_turns"} <= set(outcomes)


# -- writing ----------------------------------------------------------------------------------------


def test_write_examples_csv_needs_text_fields(tmp_path: Path) -> None:
    ex = PreferenceExample((U2,), "東京", "大阪", Location("x"))
    assert write_examples([ex], tmp_path / "a.csv", "prompt-text") == 1
    assert parse_file(tmp_path / "a.csv").examples[0].prompt == (U2,)
    with pytest.raises(ValueError, match="CSV cells hold only text"):
        write_examples([ex], tmp_path / "b.csv", "prompt-chat")
    assert not (tmp_path / "b.csv").exists()


def test_write_examples_refuses_what_the_format_cannot_hold(tmp_path: Path) -> None:
    ex = PreferenceExample((SYS, U1, A1, U2), "c", "r", Location("in.jsonl", line=4))
    with pytest.raises(FormatError, match=r"in\.jsonl:4: cannot write as dpo:prompt-text.*single user turn"):
        write_examples([ex], tmp_path / "out.jsonl", "prompt-text")
    assert write_examples([ex], tmp_path / "out.jsonl", "alpaca") == 1  # stage from the examples
    record = json.loads((tmp_path / "out.jsonl").read_text(encoding="utf-8"))
    assert record == {
        "instruction": "日本の首都は？",
        "input": "",
        "system": SYS.content,
        "history": [["Hi", "Hello!"]],
        "chosen": "c",
        "rejected": "r",
    }


def _without_system(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with its system prompt removed, wherever it was given."""
    out = {k: v for k, v in record.items() if k != "system"}
    for key in ("prompt", "messages", "conversations"):
        if isinstance(out.get(key), list):
            out[key] = [m for m in out[key] if "system" not in (m.get("role"), m.get("from"))]
    return out


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.id)
def test_every_format_reads_the_record_system_key(fmt) -> None:
    """Issue #25 asked which formats read a `system` key: every one does, from the record's top level."""
    records = PREF_RECORDS if fmt.stage == "dpo" else SFT_RECORDS
    record = records.get(fmt.name) or {
        "prompt": "日本の首都は？",
        "chosen": "東京です。",
        "rejected": "大阪です。",
    }
    example = fmt.parse({**_without_system(record), "system": "S"}, Location("f", 1))
    first = (example.prompt if isinstance(example, PreferenceExample) else example.messages)[0]
    assert first == Message("system", "S")
    assert "system" in fmt.optional_keys


def test_a_system_prompt_that_is_not_read_is_named(tmp_path: Path) -> None:
    """Issue #25: a system prompt prefkit does not read was dropped without a word. Inside a message
    object it is one of the message's keys no one reads; and `columns` naming another column for system
    hides the record's own `system` key."""
    inside = [
        {"role": "user", "content": "q", "system": "Be brief."},
        {"role": "assistant", "content": "a"},
    ]
    path = _jsonl(
        tmp_path / "d.jsonl",
        [
            {"messages": [{"role": "user", "content": "q0"}, {"role": "assistant", "content": "a"}]},
            {"messages": inside},
            {"messages": json.dumps(inside).replace("q", "q2")},  # a cell holding JSON, as in a CSV
        ],
    )
    parsed = parse_file(path)
    assert len(parsed.examples) == 3
    assert [(p.location.line, p.severity, p.kind) for p in parsed.problems] == [
        (2, "warning", "ignored_system")
    ]
    assert parsed.problems[0].message.startswith(
        "key 'system' inside a message of 'messages' is not read (a message is role/content or from/value), "
        "so its system prompt is ignored (2 record(s) have one)"
    )
    pairs = _jsonl(
        tmp_path / "p.jsonl",
        [
            {"question": "q", "chosen": "a", "rejected": "b", "system": "S", "persona": "P"},
            {"question": "q2", "chosen": "a", "rejected": "b", "system": "S"},
        ],
    )
    parsed = parse_file(
        pairs, stage="dpo", format="prompt-text", columns={"prompt": "question", "system": "persona"}
    )
    assert [e.system for e in parsed.examples] == ["P", None]
    assert [(p.location.line, p.kind) for p in parsed.problems] == [(2, "ignored_system")]
    assert "`columns` takes system from another column, which 1 record(s) lack" in parsed.problems[0].message
    # A column used as another key is read, not ignored: no warning.
    used = parse_file(pairs, stage="dpo", format="prompt-text", columns={"prompt": "system"})
    assert used.problems == [] and [e.prompt[0].content for e in used.examples] == ["S", "S"]
