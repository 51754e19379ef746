"""dataset_info.json resolution, on LLaMA-Factory's demo layout (tests/fixtures/data/llamafactory)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefkit.data.dataset_info import DatasetInfoError, resolve_dataset, resolve_datasets
from prefkit.data.examples import Message
from prefkit.data.formats import parse_file

LF_DIR = Path(__file__).parent / "fixtures" / "data" / "llamafactory"


def _parse(spec):
    return [
        parse_file(p, stage=spec.stage, format=spec.format_name, columns=spec.columns, tags=spec.tags)
        for p in spec.paths
    ]


def test_sharegpt_ranking_demo() -> None:
    spec = resolve_dataset("dpo_en_demo", LF_DIR)
    assert (spec.name, spec.stage, spec.format_name) == ("dpo_en_demo", "dpo", "sharegpt")
    assert spec.paths == [LF_DIR / "dpo_en_demo.json"]
    (parsed,) = _parse(spec)
    assert parsed.problems == [] and parsed.records == 3
    assert [e.location.line for e in parsed.examples] == [2, 18, 42]  # where each "{" is
    second = parsed.examples[1]
    assert second.prompt == (
        Message("user", "Name a prime number."),
        Message("assistant", "7 is prime."),
        Message("user", "Another one?"),
    )
    assert (second.chosen, second.rejected) == ("11 is also prime.", "9.")
    assert parsed.examples[2].chosen.startswith("富士山")


def test_alpaca_sft_with_columns() -> None:
    spec = resolve_dataset("alpaca_ja_demo", LF_DIR)
    assert (spec.stage, spec.format_name) == ("sft", "alpaca")  # formatting defaults to alpaca
    (parsed,) = _parse(spec)
    assert parsed.problems == []
    first, second, third = (e.messages for e in parsed.examples)
    assert first == (
        Message("system", "あなたは翻訳者です。"),
        Message("user", "次の文を英語に翻訳してください。\n猫が好きです。"),
        Message("assistant", "I like cats."),
    )
    assert [m.role for m in second] == ["user", "assistant", "user", "assistant"]
    assert third == (Message("user", "Give one word for happy."), Message("assistant", "Joyful."))


def test_openai_messages_through_sharegpt_with_tags() -> None:
    spec = resolve_dataset("messages_demo", LF_DIR)
    assert (spec.stage, spec.format_name) == ("sft", "sharegpt")
    assert spec.tags is not None and spec.tags["role_tag"] == "role"
    (parsed,) = _parse(spec)
    assert parsed.problems == []
    assert parsed.examples[0].messages[0] == Message("system", "Answer briefly.")
    assert parsed.examples[1].messages[-1] == Message("assistant", "晴れです。")


def test_alpaca_ranking_folder_with_renamed_columns() -> None:
    spec = resolve_dataset(" alpaca_pairs ", LF_DIR)
    assert (spec.stage, spec.format_name) == ("dpo", "alpaca")
    # a folder: its data files, sorted; the README is not data
    assert [p.name for p in spec.paths] == ["part-0.jsonl", "part-1.csv"]
    jsonl, csv_file = _parse(spec)
    assert jsonl.problems == [] and csv_file.problems == []
    summarise = "Summarise the text.\nThe cat sat on the mat all day."
    assert jsonl.examples[0].prompt == (Message("user", summarise),)
    assert jsonl.examples[1].prompt == (Message("user", "短く答えてください：水の化学式は？"),)
    assert (jsonl.examples[1].chosen, jsonl.examples[1].rejected) == ("H2Oです。", "COです。")
    (haiku,) = csv_file.examples
    assert haiku.prompt == (Message("user", "Write a haiku\nabout rain."),)
    assert haiku.location.line == 2


def test_comma_separated_names() -> None:
    specs = resolve_datasets("dpo_en_demo, alpaca_pairs", LF_DIR)
    assert [s.name for s in specs] == ["dpo_en_demo", "alpaca_pairs"]


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(DatasetInfoError, match=r"no dataset named 'dpo_en_dmo'; did you mean 'dpo_en_demo'"):
        resolve_dataset("dpo_en_dmo", LF_DIR)


def test_hub_dataset_says_to_download_it() -> None:
    with pytest.raises(DatasetInfoError, match=r"hf_hub_url.*does not download.*file_name.*train_file"):
        resolve_dataset("hub_only", LF_DIR)


def test_missing_dataset_info_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetInfoError, match=str(tmp_path / "dataset_info.json")):
        resolve_dataset("x", tmp_path)


def test_malformed_dataset_info_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "dataset_info.json").write_text('{\n  "a": {"file_name": "a.json"},\n  "b": {,}\n}', "utf-8")
    with pytest.raises(DatasetInfoError, match=r"dataset_info\.json:3: malformed JSON"):
        resolve_dataset("a", tmp_path)


def test_missing_data_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "dataset_info.json").write_text(json.dumps({"a": {"file_name": "gone.jsonl"}}), "utf-8")
    with pytest.raises(DatasetInfoError, match=r"file .*gone\.jsonl does not exist"):
        resolve_dataset("a", tmp_path)


def test_bad_entry_values(tmp_path: Path) -> None:
    (tmp_path / "d.json").write_text("[]", "utf-8")
    info = {
        "fmt": {"file_name": "d.json", "formatting": "openai"},
        "rank": {"file_name": "d.json", "ranking": "yes"},
        "cols": {"file_name": "d.json", "columns": ["prompt"]},
    }
    (tmp_path / "dataset_info.json").write_text(json.dumps(info), "utf-8")
    with pytest.raises(DatasetInfoError, match="unknown formatting 'openai'"):
        resolve_dataset("fmt", tmp_path)
    with pytest.raises(DatasetInfoError, match="`ranking` must be true or false"):
        resolve_dataset("rank", tmp_path)
    with pytest.raises(DatasetInfoError, match="'columns' must be an object of strings"):
        resolve_dataset("cols", tmp_path)
