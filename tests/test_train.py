"""The training engine end to end on the tiny model: every method learns, SFT masks prompts, full and
LoRA runs save loadable models, resume is exact, finished runs are never overwritten."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from toydata import toy_pairs, toy_sft
from transformers import TrainerCallback

from prefkit.config import load_config
from prefkit.data.collate import PreferenceCollator, SFTCollator
from prefkit.env import bf16_supported
from prefkit.train.recipe import train
from prefkit.train.run.folder import OutputDirError, checkpoints
from prefkit.train.run.metrics import read_metrics

TRL_METRICS = {
    "loss",
    "grad_norm",
    "learning_rate",
    "epoch",
    "tokens_per_second",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
    "logits/chosen",
    "logits/rejected",
}


def config(tmp_path: Path, model: Path, *overrides: str, name: str = "run"):
    data = toy_pairs(tmp_path / "pairs.jsonl")
    return load_config(
        None,
        [
            f"model_name_or_path={model}",
            f"train_file={data}",
            f"output_dir={tmp_path / name}",
            "stage=dpo",
            "lora_rank=8",
            "learning_rate=5e-3",
            "per_device_train_batch_size=4",
            "max_steps=10",
            "logging_steps=1",
            "save_steps=5",
            "cutoff_len=64",
            "lr_scheduler_type=constant",
            "report_to=none",
            *overrides,
        ],
    )


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sigmoid", "hinge", "ipo", "kto_pair", "orpo", "simpo"])
def test_every_method_learns_the_toy_preference(tmp_path, tiny_model_dir, method):
    extra = ["learning_rate=2e-2"] if method == "ipo" else []  # IPO's per-token gradients are small
    result = train(config(tmp_path, tiny_model_dir, f"pref_loss={method}", *extra))
    records = [r for r in result.metrics if "rewards/accuracies" in r]
    assert [r["step"] for r in records] == list(range(1, 11))
    assert set(records[0]) >= TRL_METRICS
    first, last = records[:3], records[-3:]
    mean = lambda rs, k: sum(r[k] for r in rs) / len(rs)  # noqa: E731
    assert mean(last, "loss") < mean(first, "loss"), method
    assert mean(last, "rewards/margins") > mean(first, "rewards/margins"), method
    assert last[-1]["rewards/accuracies"] == 1.0, method


def test_sft_collator_masks_the_prompt(tokenizer):
    from prefkit.data.examples import Location, Message, SFTExample
    from prefkit.data.tokenize import ChatEncoder

    enc = ChatEncoder(tokenizer, None, 128)
    features = enc.encode_sft(
        SFTExample((Message("user", "Hi there"), Message("assistant", "Hello!")), Location("x", 1))
    ).to_features()
    batch = SFTCollator(tokenizer.pad_token_id)([features, {"input_ids": [5], "labels": [5]}])
    trained = batch["input_ids"][0][batch["labels"][0] != -100]
    assert tokenizer.decode(trained) == "Hello!<|im_end|>\n"
    assert batch["attention_mask"][1].tolist() == [1] + [0] * (batch["input_ids"].shape[1] - 1)


def test_preference_collator_stacks_chosen_over_rejected():
    batch = PreferenceCollator(0)(
        [
            {"prompt_ids": [1, 2], "chosen_ids": [3], "rejected_ids": [4, 5]},
            {"prompt_ids": [6], "chosen_ids": [7, 8, 9], "rejected_ids": [10]},
        ]
    )
    assert batch["input_ids"].tolist() == [[1, 2, 3, 0], [6, 7, 8, 9], [1, 2, 4, 5], [6, 10, 0, 0]]
    assert batch["labels"].tolist() == [
        [-100, -100, 3, -100],
        [-100, 7, 8, 9],
        [-100, -100, 4, 5],
        [-100, 10, -100, -100],
    ]


@pytest.mark.slow
def test_sft_then_dpo_on_the_sft_adapter(tmp_path, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    sft_data = toy_sft(tmp_path / "sft.jsonl")
    sft = train(
        load_config(
            None,
            [
                f"model_name_or_path={tiny_model_dir}",
                f"train_file={sft_data}",
                f"output_dir={tmp_path / 'sft'}",
                "stage=sft",
                "learning_rate=1e-2",
                "per_device_train_batch_size=4",
                "max_steps=8",
                "logging_steps=1",
                "save_steps=100",
                "lr_scheduler_type=constant",
            ],
        )
    )
    losses = [r["loss"] for r in sft.metrics if "loss" in r]
    assert losses[-1] < losses[0]
    assert "rewards/chosen" not in sft.metrics[0]
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    PeftModel.from_pretrained(base, tmp_path / "sft")  # loads as the seed notebook loads its result

    # DPO continuing the SFT adapter: its reference is the SFT model, so at step 1 policy == reference.
    dpo = train(
        config(
            tmp_path, tiny_model_dir, f"adapter_name_or_path={tmp_path / 'sft'}", "max_steps=2", name="dpo"
        )
    )
    assert dpo.metrics[0]["rewards/chosen"] == 0.0 and dpo.metrics[0]["rewards/rejected"] == 0.0
    assert dpo.metrics[1]["rewards/margins"] != 0.0


# bf16 on a CPU: float32 weights under autocast. The rotary embedding leaves q and k in float32 beside a bf16
# v, and the output layer runs outside the model's forward; the policy and its frozen copy must still compute
# alike (a step-1 DPO loss of exactly ln 2).
@pytest.mark.parametrize(
    "precision",
    [
        "fp32",
        pytest.param(
            "bf16", marks=pytest.mark.skipif(not bf16_supported(), reason="this CPU has no bfloat16 support")
        ),
    ],
)
def test_full_finetuning_saves_a_full_model(tmp_path, tiny_model_dir, precision):
    from transformers import AutoModelForCausalLM

    result = train(
        config(
            tmp_path,
            tiny_model_dir,
            "finetuning_type=full",
            "learning_rate=1e-3",
            "max_steps=4",
            f"bf16={precision == 'bf16'}",
        )
    )
    assert result.metrics[0]["loss"] == pytest.approx(math.log(2), rel=1e-7)
    out = result.output_dir
    assert (out / "model.safetensors").exists() and not (out / "adapter_config.json").exists()
    trained = AutoModelForCausalLM.from_pretrained(out)
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert not torch.equal(trained.lm_head.weight, original.lm_head.weight)
    assert result.metrics[0]["rewards/chosen"] == 0.0  # the frozen copy starts equal to the policy


@pytest.mark.slow
def test_output_folder_contents_and_refusal_to_overwrite(tmp_path, tiny_model_dir):
    cfg = config(tmp_path, tiny_model_dir, "max_steps=4", "save_steps=2", "save_total_limit=1")
    train(cfg)
    out = Path(cfg.output_dir)
    for name in (
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer.json",
        "training_config.json",
        "metrics.jsonl",
        "loss.png",
        "rewards.png",
        "prefkit_run.json",
    ):
        assert (out / name).exists(), name
    assert [p.name for p in checkpoints(out)] == ["checkpoint-4"]  # save_total_limit honoured
    saved = json.loads((out / "training_config.json").read_text())
    assert saved["config"]["pref_loss"] == "sigmoid" and saved["lora_config"]["r"] == 8
    assert saved["training_args"]["learning_rate"] == 5e-3

    with pytest.raises(OutputDirError, match=f"holds a finished run; the model is in {out}"):
        train(cfg)
    again = config(tmp_path, tiny_model_dir, "max_steps=3", "overwrite_output_dir=true")
    assert train(again).global_step == 3
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r] == [1, 2, 3]


class StopAt(TrainerCallback):
    """Simulates a crash: raises at the start of a step (after the previous checkpoint was written)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt("simulated crash")


@pytest.mark.slow
def test_resume_is_exact(tmp_path, tiny_model_dir):
    """A run stopped after step 6 and resumed logs the same loss at every later step as an uninterrupted
    run (torchtune's test_training_state_on_resume), with no step duplicated or missing."""
    common = [
        "max_steps=10",
        "save_steps=3",
        "lora_dropout=0.1",
        "lr_scheduler_type=cosine",
        "warmup_ratio=0.2",
    ]
    straight = train(config(tmp_path, tiny_model_dir, *common, name="straight"))

    cfg = config(tmp_path, tiny_model_dir, *common, name="stopped")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[StopAt(7)])  # checkpoint-6 written, step 7 logged nothing yet
    out = Path(cfg.output_dir)
    assert [p.name for p in checkpoints(out)] == ["checkpoint-3", "checkpoint-6"]
    # A checkpoint of the run without its trainer_state.json and a staged one are never picked.
    marker = json.loads((out / "prefkit_run.json").read_text())
    marker["files"].append("checkpoint-9")
    (out / "prefkit_run.json").write_text(json.dumps(marker))
    (out / "checkpoint-9").mkdir()
    (out / ".staging" / "checkpoint-12").mkdir(parents=True)
    resumed = train(cfg)
    assert resumed.resumed_from == out / "checkpoint-6"

    a = {r["step"]: r for r in straight.metrics if "loss" in r}
    b = {r["step"]: r for r in read_metrics(out / "metrics.jsonl") if "loss" in r}
    assert sorted(b) == list(range(1, 11))  # every step once
    for step in range(1, 11):
        for key in ("loss", "rewards/margins", "learning_rate", "grad_norm"):
            assert b[step][key] == pytest.approx(a[step][key], rel=1e-5, abs=1e-7), (step, key)


@pytest.mark.slow
def test_resume_discards_metrics_logged_after_the_last_checkpoint(tmp_path, tiny_model_dir):
    cfg = config(tmp_path, tiny_model_dir, "max_steps=8", "save_steps=4")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[StopAt(6)])  # steps 5 and 6 logged, only checkpoint-4 exists
    out = Path(cfg.output_dir)
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    train(cfg)
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert steps == list(range(1, 9))


@pytest.mark.slow
def test_evaluation_and_best_model(tmp_path, tiny_model_dir):
    result = train(
        config(
            tmp_path,
            tiny_model_dir,
            "val_size=4",
            "eval_strategy=steps",
            "eval_steps=5",
            "per_device_eval_batch_size=2",
            "load_best_model_at_end=true",
            "metric_for_best_model=eval_rewards/accuracies",
        )
    )
    evals = [r for r in result.metrics if "eval_loss" in r]
    assert [r["step"] for r in evals] == [5, 10]
    assert {"eval_rewards/accuracies", "eval_rewards/margins", "eval_logps/chosen"} <= set(evals[0])
    state = json.loads((result.output_dir / "checkpoint-10" / "trainer_state.json").read_text())
    assert Path(state["best_model_checkpoint"]).parent == result.output_dir  # not the staging folder


@pytest.mark.slow
def test_a_run_that_fails_its_checks_leaves_the_previous_run_intact(tmp_path, tiny_model_dir):
    from prefkit.data.sources import DataError

    cfg = config(tmp_path, tiny_model_dir, "max_steps=2")
    train(cfg)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "chosen": "same", "rejected": "same"}\n')
    with pytest.raises(DataError):
        train(config(tmp_path, tiny_model_dir, f"train_file={bad}", "overwrite_output_dir=true"))
    out = Path(cfg.output_dir)
    assert (out / "prefkit_run.json").exists() and (out / "adapter_model.safetensors").exists()
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r] == [1, 2]
