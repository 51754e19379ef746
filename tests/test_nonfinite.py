"""A step whose loss or gradient is NaN/inf is skipped -- weights and optimiser state untouched -- and named
with its examples; too many in a row stop training; non-finite weights are never saved.

The NaN comes from real data: one example carries a character no other example has, and a forward hook
on the embedding turns any batch holding that token into NaN, as a broken row or an overflow would.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
from toydata import toy_pairs, toy_sft
from transformers import TrainerCallback

from prefkit.config import load_config
from prefkit.train.nonfinite import NonFiniteTrainingError, NonFiniteWeightsError
from prefkit.train.recipe import train
from prefkit.train.run.folder import RUN_FILE
from prefkit.train.run.metrics import METRICS_FILE, read_metrics

MARK = "§"  # in no other example, and in no text the tiny tokenizer was trained on


def poisoned_data(tmp_path: Path, stage: str, lines: set[int], n: int = 8) -> Path:
    """Toy data with MARK in the prompts of the given (1-based) lines."""
    path = toy_pairs(tmp_path / "data.jsonl", n) if stage == "dpo" else toy_sft(tmp_path / "data.jsonl", n)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for i in lines:
        if stage == "dpo":
            rows[i - 1]["prompt"] += MARK
        else:
            rows[i - 1]["messages"][0]["content"] += MARK
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


class Poison(TrainerCallback):
    """Makes the embedding output NaN for any batch holding MARK's token; records the trainable weights after
    every step and the optimiser at the end."""

    def __init__(self, tokenizer) -> None:
        self.token = tokenizer(MARK, add_special_tokens=False)["input_ids"][0]
        self.weights: dict[int, dict[str, torch.Tensor]] = {}
        self.optimizer = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        def hook(module, inputs, output):
            return output * math.nan if (inputs[0] == self.token).any() else output

        model.get_input_embeddings().register_forward_hook(hook)
        self.weights[0] = self.snapshot(model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.weights[state.global_step] = self.snapshot(model)

    def on_train_end(self, args, state, control, optimizer=None, **kwargs):
        self.optimizer = optimizer

    @staticmethod
    def snapshot(model) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def overrides(tmp_path: Path, model: Path, data: Path, stage: str, *extra: str) -> list[str]:
    return [
        f"model_name_or_path={model}",
        f"train_file={data}",
        f"output_dir={tmp_path / 'run'}",
        f"stage={stage}",
        "learning_rate=5e-3",
        "per_device_train_batch_size=2",
        "max_steps=4",
        "logging_steps=1",
        "save_steps=100",
        "cutoff_len=64",
        "plot_loss=false",
        "lr_scheduler_type=constant",
        *extra,
    ]


def tokenizer_of(model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


@pytest.mark.parametrize("stage", ["dpo", "sft"])
def test_a_nonfinite_step_is_skipped_and_named(tmp_path, tiny_model_dir, caplog, stage):
    data = poisoned_data(tmp_path, stage, {6})
    poison = Poison(tokenizer_of(tiny_model_dir))
    with caplog.at_level(logging.WARNING, logger="prefkit.train.nonfinite"):
        result = train(
            load_config(None, overrides(tmp_path, tiny_model_dir, data, stage)), callbacks=[poison]
        )

    warnings = [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert f"{data}:6" in warnings[0] and "skipped" in warnings[0]
    skipped = int(warnings[0].split()[1].rstrip(":"))  # "step N: ..."
    records = {r["step"]: r for r in result.metrics if "loss" in r and "nonfinite_steps" in r}
    assert [records[s]["nonfinite_steps"] for s in range(1, 5)] == [int(s >= skipped) for s in range(1, 5)]
    assert [math.isnan(records[s]["loss"]) for s in range(1, 5)] == [s == skipped for s in range(1, 5)]
    for step in range(1, 5):
        before, after = poison.weights[step - 1], poison.weights[step]
        unchanged = all(torch.equal(before[n], after[n]) for n in before)
        assert unchanged == (step == skipped), step
    # The optimiser took 3 steps: its per-parameter step count says so.
    assert {int(s["step"]) for s in poison.optimizer.state.values()} == {3}
    assert (result.output_dir / RUN_FILE).exists()


def test_with_gradient_accumulation_the_whole_step_is_skipped(tmp_path, tiny_model_dir, caplog):
    data = poisoned_data(tmp_path, "dpo", {3})
    poison = Poison(tokenizer_of(tiny_model_dir))
    cfg = overrides(
        tmp_path,
        tiny_model_dir,
        data,
        "dpo",
        "per_device_train_batch_size=1",
        "gradient_accumulation_steps=2",
    )
    with caplog.at_level(logging.WARNING, logger="prefkit.train.nonfinite"):
        train(load_config(None, cfg), callbacks=[poison])
    warnings = [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage()]
    assert len(warnings) == 1 and f"{data}:3" in warnings[0]
    assert warnings[0].count(str(data)) == 2  # both micro-batches of the step are named
    assert {int(s["step"]) for s in poison.optimizer.state.values()} == {3}


@pytest.mark.parametrize("stage", ["dpo", "sft"])
def test_too_many_in_a_row_stop_training_and_save_nothing(tmp_path, tiny_model_dir, stage):
    data = poisoned_data(tmp_path, stage, set(range(1, 9)))
    poison = Poison(tokenizer_of(tiny_model_dir))
    cfg = load_config(None, overrides(tmp_path, tiny_model_dir, data, stage, "max_nonfinite_steps=2"))
    with pytest.raises(
        NonFiniteTrainingError, match=r"training stopped at step 2: the last 2 optimiser steps"
    ):
        train(cfg, callbacks=[poison])
    out = Path(cfg.output_dir)
    assert not (out / "adapter_model.safetensors").exists()
    assert json.loads((out / RUN_FILE).read_text())["status"] == "running"  # resumable, not finished
    assert all(torch.equal(poison.weights[0][n], p) for n, p in poison.weights[1].items())  # step 1 skipped
    logged = [r for r in read_metrics(out / METRICS_FILE) if "loss" in r]
    assert [r["step"] for r in logged] == [1] and math.isnan(logged[0]["loss"])  # not "loss: 0.0"


class BreakWeights(TrainerCallback):
    """Puts a NaN into one trained weight after the last step, as a too-large update would."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == state.max_steps:
            with torch.no_grad():
                next(p for p in model.parameters() if p.requires_grad)[0].fill_(math.nan)


def test_nonfinite_weights_are_never_saved(tmp_path, tiny_model_dir):
    data = toy_pairs(tmp_path / "data.jsonl", 8)
    cfg = load_config(None, overrides(tmp_path, tiny_model_dir, data, "dpo"))
    with pytest.raises(NonFiniteWeightsError, match=r"NaN or infinite values .* refusing to save them"):
        train(cfg, callbacks=[BreakWeights()])
    out = Path(cfg.output_dir)
    assert not (out / "adapter_model.safetensors").exists()
    assert json.loads((out / RUN_FILE).read_text())["status"] == "running"  # resumable, not finished


class RecordGradNorms(TrainerCallback):
    """The gradient norms the Trainer logs."""

    def __init__(self) -> None:
        self.grad_norms: list[float] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "grad_norm" in logs:
            self.grad_norms.append(float(logs["grad_norm"]))


@pytest.mark.parametrize("max_steps", [4, 2])
def test_an_infinite_gradient_norm_is_nonfinite_and_stops_the_run(
    tmp_path, tiny_model_dir, caplog, max_steps
):
    """Issue #25: pref_beta 1e30 makes every gradient finite but huge, so their 2-norm overflows to inf and
    the Trainer's clipping multiplies them by 0: the adapter never moved, yet the run ended "finished", exit
    0, with 0 non-finite steps counted. With 2 steps (fewer than max_nonfinite_steps: 3) the in-a-row limit
    is never reached; a run none of whose steps changed the weights still must not end as finished."""
    data = toy_pairs(tmp_path / "data.jsonl", 8)
    extra = ("pref_beta=1e30", f"max_steps={max_steps}")
    cfg = load_config(None, overrides(tmp_path, tiny_model_dir, data, "dpo", *extra))
    norms = RecordGradNorms()
    expected = (
        "the last 3 optimiser steps in a row"
        if max_steps == 4
        else "all 2 optimiser steps of this run, up to its last"
    )
    with (
        caplog.at_level(logging.WARNING, logger="prefkit.train.nonfinite"),
        pytest.raises(
            NonFiniteTrainingError, match=rf"training stopped at step {min(max_steps, 3)}: .*{expected}"
        ),
    ):
        train(cfg, callbacks=[norms])
    warnings = [r.getMessage() for r in caplog.records if "non-finite gradient norm (inf)" in r.getMessage()]
    assert len(warnings) == min(max_steps, 3), warnings
    assert norms.grad_norms and all(math.isinf(n) for n in norms.grad_norms)  # the case of the issue
    out = Path(cfg.output_dir)
    assert not (out / "adapter_model.safetensors").exists()
    assert json.loads((out / RUN_FILE).read_text())["status"] == "running"  # never "finished"
    logged = [r["nonfinite_steps"] for r in read_metrics(out / METRICS_FILE) if "nonfinite_steps" in r]
    assert logged and logged == list(range(1, len(logged) + 1))  # every step counted
