"""A fused accumulation window (prefkit.train.fusion) trains what the configured micro-batches train: the
same logged losses and metrics at every step and the same adapter weights after several optimiser steps,
for every preference loss, DPO with an SFT term, and SFT -- on the tiny Llama, in fp32, against the same
run with `fuse_accumulation_tokens: 0` (each micro-batch its own forward, as transformers does)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from toydata import toy_pairs

from prefkit.config import load_config
from prefkit.data.load import prepare_data
from prefkit.model.loader import load_tokenizer
from prefkit.train.fusion import accumulation_fusion, longest_row
from prefkit.train.recipe import train

LOSSES = ["sigmoid", "hinge", "ipo", "kto_pair", "orpo", "simpo"]
METRICS = (
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
)


def config(tmp_path: Path, model: Path, name: str, *overrides: str):
    data = toy_pairs(tmp_path / "pairs.jsonl", n=22)  # 22 pairs: the third window is short (6 of 8)
    return load_config(
        None,
        [
            f"model_name_or_path={model}",
            f"train_file={data}",
            f"output_dir={tmp_path / name}",
            "stage=dpo",
            "lora_rank=4",
            "learning_rate=1e-2",
            "per_device_train_batch_size=1",
            "gradient_accumulation_steps=8",
            "num_train_epochs=1",
            "max_steps=-1",
            "logging_steps=1",
            "save_steps=1000",
            "cutoff_len=64",
            "lr_scheduler_type=constant",
            "plot_loss=false",
            "bf16=false",
            *overrides,
        ],
    )


def trained(
    tmp_path: Path, model: Path, name: str, *overrides: str
) -> tuple[list[dict], dict[str, torch.Tensor]]:
    result = train(config(tmp_path, model, name, *overrides))
    steps = [m for m in result.metrics if "loss" in m and "train_runtime" not in m]
    return steps, load_file(result.output_dir / "adapter_model.safetensors")


def assert_same_training(fused, unfused, rel: float = 1e-4) -> None:
    (fused_steps, fused_weights), (unfused_steps, unfused_weights) = fused, unfused
    assert [m["step"] for m in fused_steps] == [m["step"] for m in unfused_steps] == [1, 2, 3]
    for a, b in zip(fused_steps, unfused_steps, strict=True):
        for key in METRICS:
            if key in b:
                assert a[key] == pytest.approx(b[key], rel=rel, abs=1e-5), (a["step"], key)
    assert fused_weights.keys() == unfused_weights.keys()
    for key, weight in unfused_weights.items():
        torch.testing.assert_close(fused_weights[key], weight, rtol=rel, atol=1e-5)


@pytest.mark.parametrize("loss", LOSSES)
def test_a_fused_window_trains_what_the_micro_batches_train(tmp_path, tiny_model_dir, loss, caplog):
    with caplog.at_level(logging.INFO, logger="prefkit"):
        fused = trained(tmp_path, tiny_model_dir, "fused", f"pref_loss={loss}")
    assert "gradient accumulation fused: 8 micro-batches of 1 train as 1 batch of 8" in caplog.text
    unfused = trained(tmp_path, tiny_model_dir, "unfused", f"pref_loss={loss}", "fuse_accumulation_tokens=0")
    assert_same_training(fused, unfused)


def test_with_an_sft_term_and_in_part(tmp_path, tiny_model_dir):
    # pref_ftx's NLL is a token-weighted mean over its micro-batch: the fused batch must not pool it.
    # A budget of 512 tokens fuses 2 micro-batches of 2 pairs x 2 x 64 tokens: 2 batches per step.
    settings = ("pref_ftx=1.0", "per_device_train_batch_size=2", "gradient_accumulation_steps=4")
    cfg = config(tmp_path, tiny_model_dir, "x", *settings, "fuse_accumulation_tokens=512")
    assert (accumulation_fusion(cfg).factor, accumulation_fusion(cfg).steps) == (2, 2)
    fused = trained(tmp_path, tiny_model_dir, "fused", *settings, "fuse_accumulation_tokens=512")
    unfused = trained(tmp_path, tiny_model_dir, "unfused", *settings, "fuse_accumulation_tokens=0")
    assert_same_training(fused, unfused)


def test_sft_fused(tmp_path, tiny_model_dir):
    fused = trained(tmp_path, tiny_model_dir, "fused", "stage=sft")
    unfused = trained(tmp_path, tiny_model_dir, "unfused", "stage=sft", "fuse_accumulation_tokens=0")
    assert_same_training(fused, unfused)


def test_the_fused_factor_divides_the_window_and_keeps_within_the_budget(tmp_path, tiny_model_dir):
    def fusion(*overrides: str):
        return accumulation_fusion(config(tmp_path, tiny_model_dir, "x", *overrides))

    assert fusion().factor == 8  # 8 pairs x 2 x 64 tokens = 1024 <= 1536, the CPU's default budget
    assert fusion("cutoff_len=256").factor == 2  # 2 x 2 x 256 = 1024 <= 1536 < 4 x 2 x 256
    assert fusion("cutoff_len=512").factor == 1  # 2 pairs of 2 x 512 are 2048 tokens
    assert fusion("cutoff_len=2048").factor == 1  # one pair is 4096 tokens at its longest
    wide = "fuse_accumulation_tokens=8192"
    assert fusion(wide, "cutoff_len=2048").factor == 2  # 2 x 2 x 2048 = 8192
    assert fusion(wide, "cutoff_len=4096").factor == 1  # one pair is already the budget
    assert fusion(wide, "gradient_accumulation_steps=6", "cutoff_len=1024").factor == 3  # 4 fits; 3 divides
    assert fusion("fuse_accumulation_tokens=0").factor == 1
    sft = fusion(wide, "stage=sft", "cutoff_len=2048")
    assert (sft.factor, sft.batch, sft.steps) == (4, 4, 2)  # one sequence per example


def test_the_budget_counts_the_datas_longest_row_not_the_cutoff(tmp_path, tiny_model_dir):
    def fusion(longest: int | None, *overrides: str):
        return accumulation_fusion(config(tmp_path, tiny_model_dir, "x", *overrides), longest)

    # LLaMA-Factory's examples say cutoff_len 2048 for rows of a few hundred tokens.
    assert fusion(None, "cutoff_len=2048").factor == 1
    assert fusion(300, "cutoff_len=2048").factor == 2  # 2 x 2 x 300 = 1200 <= 1536 < 4 x 2 x 300
    assert fusion(5000, "cutoff_len=256").factor == 2  # rows longer than the cutoff are cut to it
    assert fusion(300, "cutoff_len=2048", "stage=sft").factor == 4  # 4 x 300 = 1200


@pytest.mark.parametrize("stage", ["dpo", "sft"])
def test_the_longest_row_is_read_from_the_prepared_data(tmp_path, tiny_model_dir, stage):
    cfg = config(tmp_path, tiny_model_dir, "x", f"stage={stage}", "cutoff_len=2048")
    train_set = prepare_data(cfg, load_tokenizer(str(tiny_model_dir))).train
    if stage == "dpo":
        columns = (train_set[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids"))
        rows = [len(p) + max(len(c), len(r)) for p, c, r in zip(*columns, strict=True)]
    else:
        rows = [len(ids) for ids in train_set["input_ids"]]
    assert longest_row(train_set) == max(rows) and len(set(rows)) > 1


def test_a_long_cutoff_over_short_data_is_fused(tmp_path, tiny_model_dir, caplog):
    with caplog.at_level(logging.INFO, logger="prefkit"):
        train(config(tmp_path, tiny_model_dir, "run", "cutoff_len=2048", "max_steps=1"))
    assert "gradient accumulation fused: 8 micro-batches of 1 train as 1 batch of 8" in caplog.text
