"""`prefkit eval` end to end on the tiny model: preference metrics (rewards checked by hand against the
reference), scored replies of the model and of its base, the three reports, and no silent overwrite."""

from __future__ import annotations

import json
import shutil

import pytest
from toydata import toy_pairs
from typer.testing import CliRunner

from prefkit.cli import app
from prefkit.config import load_config
from prefkit.data.collate import PreferenceCollator
from prefkit.data.formats import parse_file
from prefkit.data.sources import DataError
from prefkit.data.tokenize import ChatEncoder
from prefkit.errors import PrefkitError
from prefkit.evaluate.preference import RewardSettings, preference_metrics
from prefkit.evaluate.report import EvalOutputError
from prefkit.evaluate.run import evaluate_model
from prefkit.infer.sampling import SamplingSettings
from prefkit.model.loader import BASE_MODEL, adapter_active
from prefkit.model.logps import sequence_logps
from prefkit.train.losses import LossParams
from prefkit.train.recipe import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """A tiny sigmoid (DPO) run that learned the toy preference, and its data."""
    tmp = tmp_path_factory.mktemp("eval")
    data = toy_pairs(tmp / "pairs.jsonl", n=12)
    config = load_config(
        None,
        [
            f"model_name_or_path={tiny_model_dir}",
            f"train_file={data}",
            f"output_dir={tmp / 'run'}",
            "stage=dpo",
            "pref_loss=sigmoid",
            "pref_beta=0.2",
            "lora_rank=8",
            "learning_rate=5e-3",
            "per_device_train_batch_size=4",
            "max_steps=10",
            "logging_steps=5",
            "cutoff_len=64",
            "report_to=none",
        ],
    )
    return train(config).output_dir, data


@pytest.mark.slow
def test_eval_end_to_end_with_baseline(tmp_path, tiny_model_dir, trained):
    run_dir, data = trained
    out = tmp_path / "eval"
    result = evaluate_model(
        str(tiny_model_dir),
        [data],
        adapter=str(run_dir),
        output_dir=out,
        max_samples=8,
        generate_samples_n=4,
        scorers=["socratic"],
        sampling=SamplingSettings(max_new_tokens=8),
        baseline=True,
        batch_size=4,
        progress=False,
    )
    report = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    assert report == json.loads(json.dumps(result.report))
    settings = report["settings"]
    assert settings["rewards"] == {  # the run's method and beta, from its training_config.json
        "pref_loss": "sigmoid",
        "beta": 0.2,
        "gamma": 0.0,
        "label_smoothing": 0.0,
        "ftx": 0.0,
    }
    assert settings["pairs"] == 8 and settings["prompts"] == 4

    model, base = report["model"], report["baseline"]
    # the run learned the toy preference; its base did not
    assert model["preference"]["accuracy"] == 1.0
    assert model["preference"]["accuracy"] > base["preference"]["accuracy"]
    assert model["preference"]["margin"] > base["preference"]["margin"]
    assert model["preference"]["rewards/accuracies"] == 1.0 and model["preference"]["rewards/margins"] > 0
    assert not any(k.startswith("rewards/") for k in base["preference"])  # no zeros against itself
    for side in (model, base):
        assert set(side["generation"]) >= {"rouge_l", "bleu", "relevance", "closer_to_chosen", "socratic"}
        assert side["generation"]["length_tokens"] > 0 and side["generation"]["length_chars"] > 0

    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 4
    pairs = [e for e in parse_file(data, stage="dpo").examples][:4]
    for row, pair in zip(rows, pairs, strict=True):
        assert row["prompt"] == pair.prompt[-1].content and row["chosen"] == pair.chosen
        assert set(row["scores"]) == set(row["baseline_scores"]) >= {"rouge_l", "relevance", "socratic"}
        assert isinstance(row["reply"], str) and isinstance(row["baseline_reply"], str)
    md = (out / "eval.md").read_text(encoding="utf-8")
    assert "| metric | baseline | model | change | guarded by |" in md
    assert "| socratic |" in md and "relevance, rouge_l: any reply ending in a question passes" in md

    with pytest.raises(EvalOutputError, match="will not overwrite"):
        evaluate_model(str(tiny_model_dir), [data], adapter=str(run_dir), output_dir=out, progress=False)


def test_rewards_are_the_methods_against_the_adapter_switched_off(tiny_model_dir, trained):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run_dir, data = trained
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), run_dir).eval()
    from prefkit.model.loader import load_tokenizer

    encoder = ChatEncoder(load_tokenizer(str(run_dir)), None, 64)
    pair = parse_file(data, stage="dpo").examples[:1]
    metrics = preference_metrics(
        model,
        encoder,
        pair,
        rewards=RewardSettings("sigmoid", LossParams(beta=0.2)),
        reference=lambda: adapter_active(model, BASE_MODEL),
    )
    batch = PreferenceCollator(encoder.tokenizer.pad_token_id)([encoder.encode_pair(pair[0]).to_features()])
    policy, counts, _ = sequence_logps(model, batch)
    with model.disable_adapter():
        reference, _, _ = sequence_logps(model, batch)
    assert metrics["rewards/chosen"] == pytest.approx(0.2 * float(policy[0] - reference[0]), rel=1e-4)
    assert metrics["rewards/rejected"] == pytest.approx(0.2 * float(policy[1] - reference[1]), rel=1e-4)
    assert metrics["logps/chosen"] == pytest.approx(float(policy[0]), rel=1e-5)
    assert metrics["logps_per_token/chosen"] == pytest.approx(float(policy[0] / counts[0]), rel=1e-5)
    per_token_margin = float(policy[0] / counts[0] - policy[1] / counts[1])
    assert metrics["margin"] == pytest.approx(per_token_margin, rel=1e-4)
    assert metrics["accuracy"] == float(per_token_margin > 0)


def test_eval_refuses_bad_data_and_a_baseline_without_adapter(tmp_path, tiny_model_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi", "chosen": "a", "rejected": "b"}\n{"prompt": "x", "chosen": ""}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2"):
        evaluate_model(str(tiny_model_dir), [bad], output_dir=tmp_path / "e1", progress=False)
    with pytest.raises(Exception, match="the model its run started from"):
        evaluate_model(str(tiny_model_dir), [bad], baseline=True, output_dir=tmp_path / "e2", progress=False)
    assert not (tmp_path / "e1").exists() and not (tmp_path / "e2").exists()


def test_cli_eval(tmp_path, tiny_model_dir, trained):
    run_dir, data = trained
    out = tmp_path / "cli"
    # no --model: the adapter's training_config.json names its base model
    args = ["eval", "--adapter", str(run_dir), "--data", str(data)]
    args += ["--output-dir", str(out), "--max-samples", "4", "--max-new-tokens", "4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output and "relevance" in result.output
    assert (out / "eval.md").exists()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "--force" in again.output


def _train(tmp, tiny_model_dir, data, name, *overrides):
    config = load_config(
        None,
        [
            f"model_name_or_path={tiny_model_dir}",
            f"train_file={data}",
            f"output_dir={tmp / name}",
            "lora_rank=8",
            "per_device_train_batch_size=4",
            "cutoff_len=64",
            "report_to=none",
            *overrides,
        ],
    )
    return train(config).output_dir


@pytest.fixture(scope="module")
def sft_then_dpo(tmp_path_factory, tiny_model_dir):
    """An SFT adapter, and a DPO run that continued it for one step at learning rate 1e-12 (so it did not
    move), with a checkpoint."""
    tmp = tmp_path_factory.mktemp("sft_dpo")
    data = toy_pairs(tmp / "pairs.jsonl", n=8)
    sft = _train(tmp, tiny_model_dir, data, "sft", "stage=sft", "learning_rate=5e-2", "max_steps=6")
    start = f"adapter_name_or_path={sft}"
    dpo = _train(
        tmp, tiny_model_dir, data, "dpo", "stage=dpo", "pref_loss=sigmoid", start, "learning_rate=1e-12",
        "max_steps=1", "save_steps=1",
    )  # fmt: skip
    return data, sft, dpo


@pytest.mark.slow
def test_a_dpo_run_from_an_sft_adapter_is_measured_against_that_adapter(
    tmp_path, tiny_model_dir, sft_then_dpo
):
    """The run's starting point is the reference and the baseline: a DPO run that did not move from its SFT
    adapter has every implicit reward 0 and the baseline's replies."""
    data, sft, dpo = sft_then_dpo
    out = tmp_path / "eval"
    args = ["eval", "--adapter", str(dpo), "--data", str(data), "--baseline", "--output-dir", str(out)]
    result = CliRunner().invoke(app, [*args, "--max-new-tokens", "6", "--generate", "4"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    # training saved the SFT adapter it used as the reference beside the trained one: the run carries it
    assert report["settings"]["started_from"] == str(dpo / "reference")
    rewards = report["model"]["preference"]
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins"):
        assert abs(rewards[key]) < 1e-3, (key, rewards)
    # the baseline is the SFT model, which learned the data: not the bare base
    assert report["baseline"]["preference"]["accuracy"] == report["model"]["preference"]["accuracy"]
    assert report["baseline"]["preference"]["margin"] == pytest.approx(rewards["margin"], abs=1e-4)
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all(r["reply"] == r["baseline_reply"] for r in rows)
    # against the bare base (what eval measured before), the same adapter has rewards far from 0
    bare = evaluate_model(
        str(tiny_model_dir), [data], adapter=str(sft), output_dir=tmp_path / "sft-eval", pref_loss="sigmoid",
        max_samples=8, generate_samples_n=1, sampling=SamplingSettings(max_new_tokens=2), progress=False,
    )  # fmt: skip
    assert abs(bare.report["model"]["preference"]["rewards/margins"]) > 1e-2


def test_a_checkpoint_is_measured_against_its_runs_starting_point(tmp_path, sft_then_dpo):
    data, _, dpo = sft_then_dpo
    checkpoint = dpo / "checkpoint-1"
    result = evaluate_model(
        None, [data], adapter=str(checkpoint), output_dir=tmp_path / "e", generate_samples_n=1,
        sampling=SamplingSettings(max_new_tokens=2), progress=False,
    )  # fmt: skip
    assert result.report["settings"]["started_from"] == str(checkpoint / "reference")
    assert abs(result.report["model"]["preference"]["rewards/margins"]) < 1e-3


def test_a_starting_adapter_that_is_gone_is_an_error_only_where_it_is_needed(tmp_path, sft_then_dpo):
    data, _, dpo = sft_then_dpo
    moved = tmp_path / "moved"
    shutil.copytree(dpo, moved, ignore=shutil.ignore_patterns("reference", "checkpoint-*"))
    config = json.loads((moved / "training_config.json").read_text())
    config["config"]["adapter_name_or_path"] = str(tmp_path / "no-such-sft")
    (moved / "training_config.json").write_text(json.dumps(config))
    common = {"generate_samples_n": 1, "sampling": SamplingSettings(max_new_tokens=2), "progress": False}
    with pytest.raises(PrefkitError, match="no-such-sft, which is gone"):
        evaluate_model(None, [data], adapter=str(moved), output_dir=tmp_path / "a", **common)  # DPO rewards
    # a reference-free method's rewards and the replies need no starting point
    result = evaluate_model(
        None, [data], adapter=str(moved), output_dir=tmp_path / "b", pref_loss="simpo", **common
    )
    assert (
        result.report["settings"]["started_from"] is None
        and "rewards/margins" in result.report["model"]["preference"]
    )


def test_a_full_fine_tuning_run_is_measured_against_the_model_it_started_from(tmp_path, tiny_model_dir):
    data = toy_pairs(tmp_path / "pairs.jsonl", n=8)
    full = _train(
        tmp_path, tiny_model_dir, data, "full", "stage=dpo", "finetuning_type=full", "learning_rate=1e-12",
        "max_steps=1", "cutoff_len=48",
    )  # fmt: skip
    result = evaluate_model(
        str(full), [data], output_dir=tmp_path / "e", baseline=True, generate_samples_n=2,
        sampling=SamplingSettings(max_new_tokens=3), progress=False,
    )  # fmt: skip
    settings = result.report["settings"]
    assert settings["cutoff_len"] == 48 and settings["dtype"] == "fp32"  # the run's, not the defaults
    assert settings["started_from"] == str(tiny_model_dir)
    assert abs(result.report["model"]["preference"]["rewards/margins"]) < 1e-3
    assert (
        result.report["baseline"]["preference"]["accuracy"]
        == result.report["model"]["preference"]["accuracy"]
    )


def test_given_replies_beside_a_bare_model(tmp_path, tiny_model_dir, trained):
    """--model with --replies and --baseline-replies: the model's preference metrics, both files' replies."""
    _, data = trained
    rows = [
        {"prompt": e.prompt[-1].content, "reply": e.chosen} for e in parse_file(data, stage="dpo").examples
    ]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = evaluate_model(
        str(tiny_model_dir),
        [data],
        replies=path,
        baseline_replies=path,
        output_dir=tmp_path / "e",
        progress=False,
    )
    assert (
        result.report["model"]["preference"]["accuracy"] >= 0
        and result.report["baseline"]["preference"] == {}
    )
    assert result.report["failed_guards"] == []


def test_a_qlora_run_is_evaluated_on_its_quantised_base(tmp_path, trained):
    """Its run says it trained on a 4-bit FP4 base: the evaluation loads the base so (on this CPU too)."""
    pytest.importorskip("bitsandbytes")
    run_dir, data = trained
    copy = tmp_path / "qlora"
    shutil.copytree(run_dir, copy)
    config = json.loads((copy / "training_config.json").read_text())
    config["config"].update(quantization_bit=4, quantization_type="fp4", double_quantization=False)
    (copy / "training_config.json").write_text(json.dumps(config))
    result = evaluate_model(
        None, [data], adapter=str(copy), output_dir=tmp_path / "e", generate_samples_n=1,
        sampling=SamplingSettings(max_new_tokens=2), progress=False,
    )  # fmt: skip
    assert result.report["settings"]["trained_quantization_bit"] == 4
    assert result.report["settings"]["quantization"] == "4-bit FP4"
