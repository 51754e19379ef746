"""Regressions for the data findings of issue #11: each hostile input gets a located problem (or a clear
error), never a traceback, and nothing is dropped or let through silently."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from prefkit.config import load_config
from prefkit.data.dataset_info import DatasetInfoError, resolve_dataset
from prefkit.data.formats import FormatError, parse_file
from prefkit.data.load import check_data, prepare_data
from prefkit.data.readers import DataFileError, read_records
from prefkit.data.sources import DataError
from prefkit.data.tokenize import ChatEncoder
from prefkit.data.validate import check_files

HUGE = "9" * 5000


def kinds(parsed) -> list[tuple[int | None, str]]:
    return [(p.location.line, p.kind) for p in parsed.problems]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- tracebacks that became problems ----------------------------------------------------------------


def test_integers_over_4300_digits_anywhere_are_a_problem_at_their_line(tmp_path):
    jsonl = write(tmp_path / "a.jsonl", f'{{"prompt": "q", "chosen": {HUGE}, "rejected": "b"}}\n')
    assert kinds(parse_file(jsonl)) == [(1, "non_string")]
    assert "got an integer of 5000 digits" in parse_file(jsonl).problems[0].message
    listed = write(
        tmp_path / "b.json", f'[\n{{"prompt": "q", "chosen": "a", "rejected": "b", "id": {HUGE}}}\n]'
    )
    assert len(parse_file(listed).examples) == 1  # in a key no format reads: harmless
    wrapped = write(tmp_path / "c.json", f'{{"n": {HUGE}, "data": [{{"prompt": "q", "chosen": {HUGE}}}]}}')
    assert parse_file(wrapped, format="prompt-text").problems[0].kind in {"non_string", "missing_key"}
    cell = json.dumps([{"role": "user", "content": "q"}]).replace('"q"', HUGE)
    csv = write(tmp_path / "d.csv", f'prompt,chosen,rejected\n"{cell.replace(chr(34), chr(34) * 2)}",a,b\n')
    assert kinds(parse_file(csv, format="prompt-chat")) == [(2, "non_string")]
    history = write(tmp_path / "e.csv", f'instruction,output,history\nq,a,"[[""u"", {HUGE}]]"\n')
    assert kinds(parse_file(history, stage="sft")) == [(2, "non_string")]


def test_a_json_file_cut_after_a_key_is_an_error_with_its_line(tmp_path):
    with pytest.raises(DataFileError, match=r"a\.json:1: malformed JSON"):
        read_records(write(tmp_path / "a.json", '{"a":'))


def test_a_lone_surrogate_is_a_problem_when_reading_not_a_tokenizer_crash(tmp_path, tokenizer):
    path = write(tmp_path / "a.jsonl", '{"prompt": "q", "chosen": "ok \\ud800", "rejected": "b"}\n')
    parsed = parse_file(path)
    assert kinds(parsed) == [(1, "encoding")]
    assert "lone surrogate \\ud800 at character 4" in parsed.problems[0].message
    report = check_files([parsed], "dpo", ChatEncoder(tokenizer, None, 64))  # what `data check --model` does
    assert not report.ok and report.usable == 0


def test_an_sft_conversation_starting_with_the_assistant_is_a_problem(tmp_path, tokenizer):
    messages = [{"role": "assistant", "content": "Hi!"}, {"role": "user", "content": "q"}]
    messages.append({"role": "assistant", "content": "a"})
    path = write(tmp_path / "a.jsonl", json.dumps({"messages": messages}) + "\n")
    parsed = parse_file(path)
    assert kinds(parsed) == [(1, "bad_turns")]
    assert "starts with an assistant turn" in parsed.problems[0].message
    assert not check_files([parsed], "sft", ChatEncoder(tokenizer, None, 64)).ok


def test_dataset_info_formatting_list_huge_numbers_and_deep_nesting(tmp_path):
    (tmp_path / "d.jsonl").write_text("{}\n")
    info = tmp_path / "dataset_info.json"
    info.write_text(json.dumps({"d": {"file_name": "d.jsonl", "formatting": ["alpaca"]}}))
    with pytest.raises(DatasetInfoError, match=r"unknown formatting list"):
        resolve_dataset("d", tmp_path)
    info.write_text(f'{{"d": {{"file_name": "d.jsonl", "ranking": {HUGE}}}}}')
    with pytest.raises(DatasetInfoError, match=r"`ranking` must be true or false, got <a 5000-digit"):
        resolve_dataset("d", tmp_path)
    info.write_text('{"d": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(DatasetInfoError, match=r"dataset_info\.json:1: malformed JSON: nested too deeply"):
        resolve_dataset("d", tmp_path)


@pytest.mark.parametrize("file_name", ["/", "../..", "/etc/passwd", "../secret.jsonl", "", "."])
def test_dataset_info_file_name_must_stay_inside_dataset_dir(tmp_path, file_name):
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "secret.jsonl").write_text('{"prompt": "SECRET"}\n')
    (data / "dataset_info.json").write_text(json.dumps({"d": {"file_name": file_name}}))
    with pytest.raises(DatasetInfoError) as err:
        resolve_dataset("d", data)
    assert "SECRET" not in str(err.value) and "root:" not in str(err.value)


# -- silently let through: now said out loud --------------------------------------------------------


def test_a_broken_record_mid_file_does_not_drop_the_rest(tmp_path, tokenizer):
    """Issue #11: a .json broken at record 11 of 100 reported 10 records (`training on 9`)."""
    rows = [{"prompt": f"q{i}", "chosen": "yes", "rejected": "no"} for i in range(100)]
    text = "[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n"
    text = text.replace('"q10", "chosen": "yes"', '"q10", "chosen": "yes" "oops"')
    path = write(tmp_path / "a.json", text)
    cfg = load_config(None, [f"train_file={path}", "on_bad_example=skip", "cutoff_len=64"])
    prepared = prepare_data(cfg, tokenizer)
    assert len(prepared.train) == 99 and prepared.report.records == 100


def test_what_could_not_be_read_cannot_be_skipped(tmp_path, tokenizer):
    path = write(tmp_path / "a.csv", 'prompt,chosen,rejected\nq,yes,no\n"q2,yes,no\nq3,yes,no\n')
    cfg = load_config(None, [f"train_file={path}", "on_bad_example=skip", "cutoff_len=64"])
    with pytest.raises(DataError, match=r"cannot skip what was never read(.|\n)*a\.csv:3"):
        prepare_data(cfg, tokenizer)


def test_empty_files_and_folders_are_unusable_in_data_check_as_in_train(tmp_path, tokenizer):
    empty = write(tmp_path / "empty.jsonl", "")
    folder = tmp_path / "folder"
    folder.mkdir()
    assert not check_data([empty]).ok and not check_data([folder]).ok
    assert "the folder holds no data files" in str(check_data([folder]).problems[0])
    with pytest.raises(DataError):
        prepare_data(load_config(None, [f"train_file={empty}"]), tokenizer)


def test_repeated_data_and_evaluating_on_the_training_file_are_warned(tmp_path, tokenizer, caplog):
    pairs = write(tmp_path / "p.jsonl", '{"instruction": "q", "chosen": "a", "rejected": "b"}\n')
    (tmp_path / "dataset_info.json").write_text(json.dumps({"d": {"file_name": "p.jsonl", "ranking": True}}))
    with caplog.at_level(logging.WARNING):
        prepare_data(
            load_config(None, ["dataset=d,d", f"dataset_dir={tmp_path}", "cutoff_len=64"]), tokenizer
        )
        prepare_data(
            load_config(None, [f"train_file={pairs}", f"eval_file={pairs}", "cutoff_len=64"]), tokenizer
        )
    assert "listed more than once for train data" in caplog.text
    assert "is both training and evaluation data" in caplog.text


def test_duplicate_keys_and_columns(tmp_path):
    path = write(
        tmp_path / "a.jsonl",
        '{"prompt": "q", "chosen": "a", "chosen": "b", "rejected": "c"}\n'
        '{"prompt": "q", "chosen": "a", "rejected": "c", "rejected": "c"}\n',
    )
    parsed = parse_file(path)
    assert kinds(parsed) == [(1, "duplicate_key"), (2, "duplicate_key")]
    assert parsed.problems[0].severity == "error" and parsed.problems[1].severity == "warning"
    assert [e.location.line for e in parsed.examples] == [2]
    with pytest.raises(DataFileError, match="column 'chosen' appears twice"):
        parse_file(write(tmp_path / "b.csv", "prompt,chosen,chosen\nq,a,b\n"))


def test_misspelled_and_invisible_keys_are_named(tmp_path):
    path = write(
        tmp_path / "a.jsonl",
        '{"prompt": "q", "chosen": "a", "rejected": "b", "sytem": "Be brief."}\n'
        '{"prompt": "q2", "chosen\\u200b": "a", "rejected": "b"}\n',
    )
    parsed = parse_file(path)
    messages = {(p.location.line, p.kind): p.message for p in parsed.problems}
    assert "'sytem' is not one format dpo prompt-text reads" in messages[1, "unread_key"]
    assert "did you mean 'system'?" in messages[1, "unread_key"]
    assert "'chosen\\u200b' looks like 'chosen' but has U+200B in it" in messages[2, "missing_key"]


def test_invisible_replies_and_template_tokens_in_content(tmp_path):
    path = write(
        tmp_path / "a.jsonl",
        '{"prompt": "q", "chosen": "\\u200b\\u200d", "rejected": "b"}\n'
        '{"prompt": "q<|im_end|>", "chosen": "a", "rejected": "b"}\n',
    )
    report = check_data([path])
    problems = {p.location.line: (p.kind, p.message) for p in report.problems}
    assert problems[1] == ("empty_content", "chosen is empty (only invisible characters: U+200B, U+200D)")
    assert problems[2][0] == "control_token" and "'<|im_end|>'" in problems[2][1]
    assert report.usable == 1


def test_cannot_tell_the_format_names_the_first_record(tmp_path):
    path = write(tmp_path / "a.jsonl", '\n\n{"question": "q", "answer": "a"}\n')
    with pytest.raises(FormatError, match=r"a\.jsonl:3: cannot tell the format"):
        parse_file(path)


def test_max_samples_is_applied_before_tokenising(tmp_path, tokenizer):
    rows = [{"prompt": f"q{i}", "chosen": "yes", "rejected": "no"} for i in range(6)]
    rows[4]["chosen"] = "no"  # unusable, but past max_samples: never read into the run
    path = write(tmp_path / "a.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    prepared = prepare_data(load_config(None, [f"train_file={path}", "max_samples=3"]), tokenizer)
    assert len(prepared.train) == 3 and prepared.report.records == 3 and len(prepared.report.features) == 3


# -- issue #25: crashes of `data check --model`, and turn orders let through ---------------------------

CHAT_PAIR = {
    "prompt": [{"role": "user", "content": "q"}],
    "chosen": [{"role": "assistant", "content": "a"}],
    "rejected": [{"role": "assistant", "content": "b"}],
}
SHAREGPT_PAIR = {
    "conversations": [{"from": "human", "value": "q"}],
    "chosen": {"from": "gpt", "value": "a"},
    "rejected": {"from": "gpt", "value": "b"},
}


def lines(*records: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def assistant_first(record: dict) -> dict:
    """``record`` with an assistant turn put before its first user turn."""
    key = "prompt" if "prompt" in record else "conversations"
    turns = record[key]
    opening = (
        {"role": "assistant", "content": "Hi!"} if "role" in turns[0] else {"from": "gpt", "value": "Hi!"}
    )
    return {**record, key: [opening, *turns]}


SHAREGPT_PAIR_OF_CONVERSATIONS = {
    "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
    "rejected_conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "b"}],
}


@pytest.mark.parametrize(
    ("good", "bad", "where"),
    [
        (SHAREGPT_PAIR, assistant_first(SHAREGPT_PAIR), "conversations[0]"),
        (CHAT_PAIR, assistant_first(CHAT_PAIR), "prompt[0]"),
        (
            SHAREGPT_PAIR_OF_CONVERSATIONS,
            {k: [{"from": "gpt", "value": "Hi!"}, *v] for k, v in SHAREGPT_PAIR_OF_CONVERSATIONS.items()},
            "conversations[0]",
        ),
        (  # a system prompt from the `system` key does not shift the index the message names
            {**SHAREGPT_PAIR, "system": "s"},
            {**assistant_first(SHAREGPT_PAIR), "system": "s"},
            "conversations[0]",
        ),
    ],
)
def test_a_preference_conversation_starting_with_the_assistant_is_a_problem(
    tmp_path, tokenizer, good, bad, where
):
    """Issue #25: `data check --model` crashed ("Cannot apply chat template to an empty conversation") on a
    ShareGPT DPO record whose conversation opens with an assistant turn; SFT already refused it."""
    path = write(tmp_path / "a.jsonl", lines(good, bad))
    parsed = parse_file(path)
    assert kinds(parsed) == [(2, "bad_turns")]
    assert parsed.problems[0].message.startswith(f"{where}: the conversation starts with an assistant turn")
    report = check_files([parsed], "dpo", ChatEncoder(tokenizer, None, 64))  # what `data check --model` does
    assert [(str(p.location), p.kind) for p in report.errors] == [(f"{path}:2", "bad_turns")]
    # Training refuses it the same way, or skips exactly it.
    with pytest.raises(DataError, match=rf"a\.jsonl:2: {re.escape(where)}: the conversation starts"):
        prepare_data(load_config(None, [f"train_file={path}", "cutoff_len=64"]), tokenizer)
    cfg = load_config(None, [f"train_file={path}", "cutoff_len=64", "on_bad_example=skip"])
    prepared = prepare_data(cfg, tokenizer)
    assert [e.location.line for e in prepared.train_examples] == [1]


@pytest.mark.parametrize(
    "bad",
    [
        {**CHAT_PAIR, "rejected": "b \ud800"},  # a reply given as plain text
        {**CHAT_PAIR, "chosen": {"role": "assistant", "content": "a"}, "rejected": "\ud800"},
        {**CHAT_PAIR, "prompt": "q \ud800"},  # a plain-text prompt in a prompt-chat file
        {**SHAREGPT_PAIR, "chosen": "a \ud800"},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a \ud800"}]},
        {
            "messages": json.dumps(
                [{"role": "user", "content": "q\ud800"}, {"role": "assistant", "content": "a"}]
            )
        },
    ],
)
def test_a_lone_surrogate_anywhere_in_a_chat_record_is_a_problem(tmp_path, tokenizer, bad):
    """Issue #25: a lone surrogate in a plain-text reply or prompt of a chat-format file reached the
    tokenizer (a TypeError traceback from `data check --model`); in message contents it was already caught."""
    good = {**bad, **(CHAT_PAIR if "prompt" in bad else SHAREGPT_PAIR if "conversations" in bad else {})}
    if "messages" in bad:
        good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    path = write(tmp_path / "a.jsonl", json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    parsed = parse_file(path)
    assert kinds(parsed) == [(2, "encoding")]
    assert "holds a lone surrogate \\ud800" in parsed.problems[0].message
    report = check_files([parsed], parsed.stage, ChatEncoder(tokenizer, None, 64))
    assert [(p.location.line, p.kind) for p in report.errors] == [(2, "encoding")] and report.usable == 1
    cfg = load_config(None, [f"train_file={path}", "cutoff_len=64", f"stage={parsed.stage}"])
    with pytest.raises(DataError, match=r"a\.jsonl:2: .*lone surrogate"):
        prepare_data(cfg, tokenizer)
