"""convert_file: every shape to every other and back, refusals, skip_bad, overwrite."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from prefkit.data.convert import ConversionError, convert_file
from prefkit.data.examples import Location, Message, PreferenceExample, SFTExample
from prefkit.data.formats import FORMATS, parse_file, write_examples

SYS = Message("system", "丁寧に答えてください。")
LOC = Location("seed")

SINGLE = [
    PreferenceExample((SYS, Message("user", "日本の首都は？")), "東京です。", "大阪です。", LOC),
    PreferenceExample((Message("user", 'Say "hi",\nthen stop.'),), "hi", "", LOC),  # empty kept
]
MULTI = [
    *SINGLE,
    PreferenceExample(
        (SYS, Message("user", "Hi"), Message("assistant", "Hello!"), Message("user", "2+2?")), "4", "5", LOC
    ),
]
SFT = [
    SFTExample((SYS, Message("user", "q"), Message("assistant", "a")), LOC),
    SFTExample(
        (
            Message("user", "こんにちは"),
            Message("assistant", "やあ"),
            Message("user", "元気？"),
            Message("assistant", "元気です"),
        ),
        LOC,
    ),
]

PREF_NAMES = [f.name for f in FORMATS if f.stage == "dpo"]
SFT_NAMES = [f.name for f in FORMATS if f.stage == "sft"]
EXTS = [".jsonl", ".json", ".parquet", ".csv"]
CSV_OK = {"prompt-text", "alpaca"}  # the formats whose fields are all text (alpaca: without history)


def _key(example):
    if isinstance(example, PreferenceExample):
        return example.prompt, example.chosen, example.rejected
    return example.messages


def _examples_for(a: str, b: str, ext: str) -> list[PreferenceExample]:
    # prompt-text and CSV hold a single user turn (plus system); the rest hold whole histories.
    return SINGLE if "prompt-text" in (a, b) or ext == ".csv" else MULTI


# Message-list formats do not fit in CSV cells, so CSV is tried between the text formats only.
PREF_CASES = [
    (a, b, ext)
    for a, b in itertools.permutations(PREF_NAMES, 2)
    for ext in EXTS
    if ext != ".csv" or {a, b} <= CSV_OK
]


@pytest.mark.parametrize(("a", "b", "ext"), PREF_CASES)
def test_preference_round_trip(tmp_path: Path, a: str, b: str, ext: str) -> None:
    examples = _examples_for(a, b, ext)
    src, mid, back = tmp_path / f"src{ext}", tmp_path / f"mid{ext}", tmp_path / f"back{ext}"
    write_examples(examples, src, a, stage="dpo")
    r1 = convert_file(src, mid, b)
    assert (r1.source_format, r1.target_format) == (f"dpo:{a}", f"dpo:{b}")
    assert (r1.written, r1.problems) == (len(examples), [])
    middle = parse_file(mid)
    assert (middle.format, middle.stage) == (b, "dpo")  # detection recognises what we wrote
    r2 = convert_file(mid, back, a, stage="dpo")
    assert r2.written == len(examples)
    again = parse_file(back, stage="dpo", format=a)
    assert again.problems == []
    assert [_key(e) for e in middle.examples] == [_key(e) for e in examples]
    assert [_key(e) for e in again.examples] == [_key(e) for e in examples]


@pytest.mark.parametrize("ext", [".jsonl", ".json", ".parquet"])
@pytest.mark.parametrize(("a", "b"), list(itertools.permutations(SFT_NAMES, 2)))
def test_sft_round_trip(tmp_path: Path, a: str, b: str, ext: str) -> None:
    src, mid, back = tmp_path / f"src{ext}", tmp_path / f"mid{ext}", tmp_path / f"back{ext}"
    write_examples(SFT, src, a, stage="sft")
    convert_file(src, mid, b, stage="sft")
    convert_file(mid, back, a, stage="sft")
    middle, again = parse_file(mid, stage="sft"), parse_file(back, stage="sft")
    assert (middle.format, again.format) == (b, a)
    assert [_key(e) for e in middle.examples] == [_key(e) for e in SFT]
    assert [_key(e) for e in again.examples] == [_key(e) for e in SFT]


def test_csv_of_text_formats_round_trips_through_sft_alpaca(tmp_path: Path) -> None:
    write_examples(SINGLE, tmp_path / "p.csv", "prompt-text")
    result = convert_file(tmp_path / "p.csv", tmp_path / "s.csv", "alpaca", stage="sft")
    assert result.target_format == "sft:alpaca"
    assert [e.messages for e in parse_file(tmp_path / "s.csv").examples] == [
        tuple(e.chosen_messages()) for e in SINGLE
    ]


def test_preference_to_sft_keeps_prompt_and_chosen(tmp_path: Path) -> None:
    write_examples(MULTI, tmp_path / "p.jsonl", "sharegpt", stage="dpo")
    result = convert_file(tmp_path / "p.jsonl", tmp_path / "s.jsonl", "messages")
    assert result.target_format == "sft:messages"
    parsed = parse_file(tmp_path / "s.jsonl")
    assert parsed.stage == "sft"
    assert [e.messages for e in parsed.examples] == [tuple(e.chosen_messages()) for e in MULTI]
    # "alpaca" stays in the source's stage unless told otherwise
    assert convert_file(tmp_path / "p.jsonl", tmp_path / "a.jsonl", "alpaca").target_format == "dpo:alpaca"
    assert convert_file(tmp_path / "p.jsonl", tmp_path / "b.jsonl", "alpaca", stage="sft").written == 3


def test_sft_to_preference_is_refused(tmp_path: Path) -> None:
    write_examples(SFT, tmp_path / "s.jsonl", "messages")
    with pytest.raises(ConversionError, match="no rejected replies"):
        convert_file(tmp_path / "s.jsonl", tmp_path / "p.jsonl", "prompt-chat")
    assert not (tmp_path / "p.jsonl").exists()


def _with_bad_lines(path: Path) -> Path:
    good = {"prompt": "p", "chosen": "c", "rejected": "r"}
    path.write_text(
        "\n".join(
            [
                json.dumps(good),
                "{oops",
                json.dumps({"prompt": "p", "chosen": 3, "rejected": "r"}),
                json.dumps(good),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    return path


def test_bad_records_refuse_the_conversion_with_file_and_line(tmp_path: Path) -> None:
    src = _with_bad_lines(tmp_path / "in.jsonl")
    with pytest.raises(ConversionError) as err:
        convert_file(src, tmp_path / "out.jsonl", "sharegpt")
    message = str(err.value)
    assert f"{src}:2: malformed JSON" in message
    assert f"{src}:3: chosen: expected a string, got int" in message
    assert not (tmp_path / "out.jsonl").exists()


def test_skip_bad_writes_the_rest_and_returns_the_problems(tmp_path: Path) -> None:
    src = _with_bad_lines(tmp_path / "in.jsonl")
    result = convert_file(src, tmp_path / "out.jsonl", "sharegpt", skip_bad=True)
    assert result.written == 2
    assert [(p.location.line, p.kind) for p in result.problems] == [(2, "malformed_json"), (3, "non_string")]
    assert len(parse_file(tmp_path / "out.jsonl").examples) == 2


def test_what_the_target_cannot_hold_is_a_located_problem(tmp_path: Path) -> None:
    write_examples(MULTI, tmp_path / "in.jsonl", "prompt-chat")
    with pytest.raises(ConversionError, match=r"in\.jsonl:3: cannot write as dpo:prompt-text"):
        convert_file(tmp_path / "in.jsonl", tmp_path / "out.jsonl", "prompt-text")
    result = convert_file(tmp_path / "in.jsonl", tmp_path / "out.jsonl", "prompt-text", skip_bad=True)
    assert result.written == 2 and [p.kind for p in result.problems] == ["unconvertible"]


def test_existing_destination_is_kept_unless_overwrite(tmp_path: Path) -> None:
    write_examples(SINGLE, tmp_path / "in.jsonl", "prompt-text")
    dst = tmp_path / "out.jsonl"
    dst.write_text("precious\n", encoding="utf-8")
    with pytest.raises(ConversionError, match="already exists"):
        convert_file(tmp_path / "in.jsonl", dst, "prompt-chat")
    assert dst.read_text(encoding="utf-8") == "precious\n"
    convert_file(tmp_path / "in.jsonl", dst, "prompt-chat", overwrite=True)
    assert parse_file(dst).format == "prompt-chat"


def test_failed_csv_write_leaves_the_old_file(tmp_path: Path) -> None:
    write_examples(MULTI, tmp_path / "in.jsonl", "prompt-chat")
    dst = tmp_path / "out.csv"
    dst.write_text("old\n", encoding="utf-8")
    with pytest.raises(ValueError, match="CSV cells hold only text"):
        convert_file(tmp_path / "in.jsonl", dst, "sharegpt", overwrite=True)
    assert dst.read_text(encoding="utf-8") == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.csv"]  # no temp file left


def test_forced_source_format(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(
        json.dumps({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]})
        + "\n",
        "utf-8",
    )
    result = convert_file(src, tmp_path / "out.json", "alpaca", source_format="sft:sharegpt")
    assert result.source_format == "sft:sharegpt" and result.target_format == "sft:alpaca"
    assert json.loads((tmp_path / "out.json").read_text("utf-8")) == [
        {"instruction": "q", "input": "", "output": "a"}
    ]
