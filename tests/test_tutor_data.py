"""Bundled Socratic-tutor preference data: the committed files match the generator; invariants hold."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest
from scriptkit import load_script

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "src" / "prefkit" / "builtin" / "data"
DOMAINS = {"adtech", "ai", "programming", "data_science"}
Records = list[dict[str, str]]


def _read(name: str) -> Records:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    return load_script("scripts/make_tutor_data.py")


@pytest.fixture(scope="module")
def train() -> Records:
    return _read("tutor_train.jsonl")


@pytest.fixture(scope="module")
def test_split() -> Records:
    return _read("tutor_test.jsonl")


def test_committed_files_equal_a_fresh_generation(gen: ModuleType, tmp_path: Path) -> None:
    assert gen.main(["--out-dir", str(tmp_path)]) == 0
    for name in ("tutor_train.jsonl", "tutor_test.jsonl"):
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), f"{name} is stale"
    assert gen.main(["--check"]) == 0


def test_generation_is_deterministic(gen: ModuleType) -> None:
    assert gen.outputs() == gen.outputs()


def test_check_flags_a_stale_file(gen: ModuleType, tmp_path: Path) -> None:
    assert gen.main(["--out-dir", str(tmp_path)]) == 0
    (tmp_path / "tutor_test.jsonl").write_text("{}\n", encoding="utf-8")
    assert gen.main(["--check", "--out-dir", str(tmp_path)]) == 1


def test_counts(train: Records, test_split: Records) -> None:
    both = train + test_split
    assert len(both) >= 330
    assert sum(r["lang"] == "ja" for r in both) >= 120
    assert len(train) >= 270
    assert 50 <= len(test_split) <= 70
    assert sum(r["lang"] == "ja" for r in test_split) >= 20
    for records in (train, test_split):
        seen = Counter((r["lang"], r["domain"]) for r in records)
        assert {r["domain"] for r in records} == DOMAINS
        assert all(seen[lang, d] > 0 for lang in ("en", "ja") for d in DOMAINS)


def test_chosen_asks_and_rejected_tells(train: Records, test_split: Records) -> None:
    for r in train + test_split:
        assert r["chosen"].endswith("？" if r["lang"] == "ja" else "?"), r
        assert "?" not in r["rejected"] and "？" not in r["rejected"], r


def test_no_prompt_or_topic_shared_between_splits(train: Records, test_split: Records) -> None:
    assert not {r["topic"] for r in train} & {r["topic"] for r in test_split}
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test_split}


def test_prompts_unique_within_each_split(train: Records, test_split: Records) -> None:
    for records in (train, test_split):
        prompts = [r["prompt"] for r in records]
        assert len(prompts) == len(set(prompts))


def test_records_have_the_documented_fields(train: Records, test_split: Records) -> None:
    for r in train + test_split:
        assert set(r) == {"prompt", "chosen", "rejected", "lang", "domain", "topic"}
        assert r["lang"] in {"en", "ja"} and r["domain"] in DOMAINS


def test_validation_rejects_a_broken_pair(gen: ModuleType) -> None:
    train, test = gen.build()
    bad = dict(train[0], rejected=train[0]["rejected"] + " Right?")
    with pytest.raises(gen.DataError, match="question mark"):
        gen.validate([bad, *train[1:]], test)
    with pytest.raises(gen.DataError, match="in both splits"):
        gen.validate(train, [*test, train[0]])
