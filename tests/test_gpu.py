"""What only a CUDA GPU can show, on the tiny in-repo models (seconds each on a GPU): QLoRA (bitsandbytes
4-bit NF4) DPO trains on CUDA from a step-1 loss of ln 2; bf16 training on CUDA tracks fp32; greedy
generation on CUDA gives the CPU's tokens; the reference-free losses run there.

Every test here is marked ``gpu``: without CUDA the conftest skips it with the reason, and
``python benchmarks/gpu_check.py`` runs them on a GPU machine (``pytest -m gpu``). The models are 64 wide:
bitsandbytes' 4-bit layers want input widths that are multiples of 64."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny import build_family, build_tiny_model
from toydata import toy_pairs, toy_sft
from transformers import TrainerCallback

from prefkit.config import load_config
from prefkit.data.examples import Message
from prefkit.infer.generate import generate_replies
from prefkit.infer.sampling import SamplingSettings
from prefkit.model.inference import load_for_inference
from prefkit.train.losses import LOSSES
from prefkit.train.recipe import TrainResult, train

pytestmark = pytest.mark.gpu

REFERENCE_FREE = sorted(name for name, loss in LOSSES.items() if not loss.needs_reference)


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("wide") / "model", hidden_size=64)


def half_precision() -> str:
    """bf16 where the GPU has it, else fp16 (a T4)."""
    return "bf16=true" if torch.cuda.is_bf16_supported() else "fp16=true"


def run(tmp_path: Path, model: Path, *overrides: str, name: str = "run", callback: Any = None) -> TrainResult:
    config = load_config(
        None,
        [
            f"model_name_or_path={model}",
            f"train_file={toy_pairs(tmp_path / 'pairs.jsonl')}",
            f"output_dir={tmp_path / name}",
            "stage=dpo",
            "lora_rank=8",
            "learning_rate=5e-3",
            "per_device_train_batch_size=4",
            "max_steps=4",
            "logging_steps=1",
            "save_steps=1000",
            "cutoff_len=64",
            "lr_scheduler_type=constant",
            "plot_loss=false",
            "report_to=none",
            *overrides,
        ],
    )
    return train(config, callbacks=[callback] if callback else None)


def step_losses(result: TrainResult) -> list[float]:
    return [r["loss"] for r in result.metrics if "loss" in r and "train_runtime" not in r]


class WhereItTrains(TrainerCallback):
    """At the start of training: the devices of the model's parameters and its bitsandbytes 4-bit layers
    (peft's LoRA wrapper around one shares its class name; its module does not)."""

    def __init__(self) -> None:
        self.devices: set[str] = set()
        self.four_bit = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.devices = {p.device.type for p in model.parameters()}
        self.four_bit = sum(
            type(m).__name__ == "Linear4bit" and type(m).__module__.startswith("bitsandbytes")
            for m in model.modules()
        )


# Llama: the quickstart's SmolLM2; Gemma 3: gemma-3-270m. Both use their tokenizer's chat template.
@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_qlora_dpo_trains_on_cuda_from_ln2(tmp_path, family):
    from safetensors.torch import load_file

    model = build_family(family, tmp_path / family, hidden_size=64)
    where = WhereItTrains()
    result = run(tmp_path, model, "quantization_bit=4", half_precision(), "max_steps=10", callback=where)

    assert where.four_bit > 0 and where.devices == {"cuda"}  # quantised, on the GPU: not a silent fallback
    losses = step_losses(result)
    assert len(losses) == 10 and all(math.isfinite(x) for x in losses), losses
    assert all(r["nonfinite_steps"] == 0 for r in result.metrics if "loss" in r and "train_runtime" not in r)
    # LoRA starts as the identity, so at step 1 the policy is its reference (the 4-bit base with the
    # adapter off); only half-precision rounding between the two passes may move the loss off ln 2.
    assert losses[0] == pytest.approx(math.log(2), abs=1e-2)
    assert losses[-1] < math.log(2)  # it learns the toy preference
    trained = load_file(result.output_dir / "adapter_model.safetensors")
    assert any(v.abs().sum() > 0 for k, v in trained.items() if "lora_B" in k)


def test_bf16_training_on_cuda_tracks_fp32(tmp_path, wide_model):
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    sft = [f"train_file={toy_sft(tmp_path / 'sft.jsonl')}", "stage=sft", "learning_rate=1e-3"]
    losses = {}
    for precision in ("bf16", "fp32"):
        where = WhereItTrains()
        result = run(
            tmp_path, wide_model, *sft, f"bf16={precision == 'bf16'}", name=precision, callback=where
        )
        assert where.devices == {"cuda"}
        losses[precision] = step_losses(result)
    assert len(losses["fp32"]) == 4
    # SFT on the random model: losses near ln(vocab) = 6.2, where bf16's rounding is ~0.5% of the loss.
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=2e-2)


def test_greedy_generation_on_cuda_gives_the_cpus_tokens(wide_model):
    prompts = [
        [Message("user", "What is a neural network?")],
        [Message("user", "Python lists are mutable; tuples are not.")],
        [Message("user", "機械学習モデルはデータから規則を学びます。")],
    ]
    replies = {}
    for device in ("cpu", "cuda"):
        loaded = load_for_inference(str(wide_model), device=device, dtype="fp32")
        assert next(loaded.model.parameters()).device.type == device
        out = generate_replies(
            loaded.model,
            loaded.encoder(),
            prompts,
            settings=SamplingSettings(max_new_tokens=24),
            batch_size=2,
        )
        replies[device] = [(r.text, r.tokens, r.finish_reason) for r in out]
    assert replies["cuda"] == replies["cpu"]


@pytest.mark.parametrize("method", REFERENCE_FREE)
def test_reference_free_losses_train_on_cuda(tmp_path, wide_model, method):
    where = WhereItTrains()
    result = run(tmp_path, wide_model, f"pref_loss={method}", half_precision(), callback=where)
    assert where.devices == {"cuda"}
    losses = step_losses(result)
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses), losses
    assert all(r["nonfinite_steps"] == 0 for r in result.metrics if "loss" in r and "train_runtime" not in r)
