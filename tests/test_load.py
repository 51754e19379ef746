"""The data pipeline from a Config: sources, refusal/skip of bad data, split, tokenised datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefkit.config import load_config
from prefkit.data.examples import Location, Message, PreferenceExample
from prefkit.data.load import prepare_data, split_examples
from prefkit.data.sources import DataError

FIXTURES = Path(__file__).parent / "fixtures" / "data"


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def rows(n: int) -> list[dict]:
    return [
        {"prompt": f"Question {i}?", "chosen": f"Good answer {i}.", "rejected": f"Bad {i}."} for i in range(n)
    ]


def test_prepare_tokenises_and_splits(tmp_path, tokenizer):
    data = write_jsonl(tmp_path / "d.jsonl", rows(20))
    cfg = load_config(None, [f"train_file={data}", "val_size=0.25", "cutoff_len=64", "template=chatml"])
    prepared = prepare_data(cfg, tokenizer)
    assert len(prepared.train) == 15 and len(prepared.eval) == 5
    assert set(prepared.train.column_names) == {
        "prompt_ids",
        "chosen_ids",
        "rejected_ids",
        "example_id",
        "length",
    }
    first = prepared.train_examples[0]
    assert prepared.train[0]["example_id"] == str(first.location)  # "d.jsonl:N", for messages about a batch
    assert tokenizer.decode(prepared.train[0]["chosen_ids"]) == f"{first.chosen}<|im_end|>\n"
    train_prompts = {e.prompt for e in prepared.train_examples}
    assert not train_prompts & {e.prompt for e in prepared.eval_examples}


def test_bad_data_is_refused_with_its_lines(tmp_path, tokenizer):
    data = tmp_path / "d.jsonl"
    good = rows(3)
    data.write_text(
        json.dumps(good[0])
        + "\n"
        + '{"prompt": "x", "chosen": "same", "rejected": "same"}\n'
        + "{not json\n"
        + json.dumps(good[1])
        + "\n",
        encoding="utf-8",
    )
    cfg = load_config(None, [f"train_file={data}"])
    with pytest.raises(DataError) as err:
        prepare_data(cfg, tokenizer)
    message = str(err.value)
    assert f"{data}:2: chosen is identical to rejected" in message
    assert message.count(f"{data}:2:") == 1  # said once, not again as a truncation problem
    assert f"{data}:3: malformed JSON" in message
    assert "on_bad_example: skip" in message


def test_skip_trains_on_the_rest_and_says_which(tmp_path, tokenizer, caplog):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(rows(1)[0]) + "\n" + '{"prompt": "x", "chosen": "", "rejected": "r"}\n')
    cfg = load_config(None, [f"train_file={data}", "on_bad_example=skip"])
    with caplog.at_level("WARNING"):
        prepared = prepare_data(cfg, tokenizer)
    assert len(prepared.train) == 1
    assert [str(p.location) for p in prepared.skipped] == [f"{data}:2"]
    assert any(f"skipped {data}:2: chosen is empty" in r.getMessage() for r in caplog.records)


def test_max_samples_and_max_eval_samples(tmp_path, tokenizer):
    data = write_jsonl(tmp_path / "d.jsonl", rows(100))
    cfg = load_config(None, [f"train_file={data}", "max_samples=60", "val_size=0.5", "max_eval_samples=7"])
    prepared = prepare_data(cfg, tokenizer)
    assert len(prepared.train) == 30 and len(prepared.eval) == 7


def test_eval_file_is_used_instead_of_a_split(tmp_path, tokenizer):
    train = write_jsonl(tmp_path / "t.jsonl", rows(5))
    evals = write_jsonl(tmp_path / "e.jsonl", rows(2))
    cfg = load_config(None, [f"train_file={train}", f"eval_file={evals}", "val_size=0.5"])
    prepared = prepare_data(cfg, tokenizer)
    assert len(prepared.train) == 5 and len(prepared.eval) == 2


def test_split_is_seeded_grouped_and_counts(tmp_path):
    examples = [
        PreferenceExample((Message("user", f"P{i // 2}"),), f"c{i}", f"r{i}", Location("f", i + 1))
        for i in range(40)
    ]
    train1, eval1 = split_examples(examples, 0.2, seed=1)
    _, eval2 = split_examples(examples, 0.2, seed=1)
    _, eval3 = split_examples(examples, 0.2, seed=2)
    assert eval1 == eval2 and eval1 != eval3
    assert len(eval1) == 8 and len(train1) == 32
    assert not {e.prompt for e in train1} & {e.prompt for e in eval1}  # both examples of a prompt together
    assert len(split_examples(examples, 6, seed=0)[1]) == 6  # a count
    with pytest.raises(DataError, match="leaves no training examples"):
        split_examples(examples[:2], 0.9, seed=0)


def test_llamafactory_dataset_names(tokenizer):
    cfg = load_config(None, ["dataset=dpo_en_demo", f"dataset_dir={FIXTURES / 'llamafactory'}"])
    prepared = prepare_data(cfg, tokenizer)
    assert len(prepared.train) >= 2
    sft_cfg = load_config(
        None, ["stage=dpo", "dataset=alpaca_ja_demo", f"dataset_dir={FIXTURES / 'llamafactory'}"]
    )
    with pytest.raises(DataError, match="is SFT \\(ranking: false\\) data, but stage is dpo"):
        prepare_data(sft_cfg, tokenizer)


def test_builtin_sample_is_clean(tokenizer):
    cfg = load_config(None, ["train_file=builtin:sample_pairs"])
    prepared = prepare_data(cfg, tokenizer)
    assert prepared.report.ok and len(prepared.train) == 8


def test_no_data_configured():
    cfg = load_config(None, [])
    with pytest.raises(DataError, match="no training data"):
        prepare_data(cfg, None)


def test_sft_on_a_preference_file_trains_prompt_and_chosen(tmp_path, tokenizer):
    data = write_jsonl(tmp_path / "d.jsonl", rows(3))
    prepared = prepare_data(load_config(None, ["stage=sft", f"train_file={data}"]), tokenizer)
    assert len(prepared.train) == 3
    assert set(prepared.train.column_names) == {"input_ids", "labels", "example_id"}
    trained = [
        t
        for t, label in zip(prepared.train[0]["input_ids"], prepared.train[0]["labels"], strict=True)
        if label != -100
    ]
    assert tokenizer.decode(trained) == "Good answer 0.<|im_end|>\n"
