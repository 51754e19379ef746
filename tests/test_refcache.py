"""The reference log-prob cache: the same losses as computing the reference every step, read back by
later epochs and reruns, and with full fine-tuning no frozen copy once it is warm."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from toydata import toy_pairs

import prefkit.train.trainer as trainer_module
from prefkit.config import load_config
from prefkit.env import cache_dir
from prefkit.train.recipe import train
from prefkit.train.refcache import ReferenceCache, folder_digest, reference_identity
from prefkit.train.run.metrics import read_metrics


def _config(tmp_path: Path, model: Path, name: str, *overrides: str):
    data = toy_pairs(tmp_path / "pairs.jsonl", n=8)
    return load_config(
        None,
        [
            f"model_name_or_path={model}",
            f"train_file={data}",
            f"output_dir={tmp_path / name}",
            "stage=dpo",
            "pref_loss=sigmoid",
            "lora_rank=8",
            "learning_rate=5e-3",
            "per_device_train_batch_size=4",
            "num_train_epochs=2",
            "logging_steps=1",
            "save_steps=1000",
            "cutoff_len=64",
            "lr_scheduler_type=constant",
            "report_to=none",
            "plot_loss=false",
            *overrides,
        ],
    )


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
    """Each test starts from an empty cache (the LoRA and full fine-tuning references of one model are the
    same function, so they share one)."""
    monkeypatch.setenv("PREFKIT_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def forwards(monkeypatch):
    """How many times the trainer runs a model (policy and reference forwards alike)."""
    count = {"n": 0}
    real = trainer_module.sequence_logps

    def counting(model, batch):
        count["n"] += 1
        return real(model, batch)

    monkeypatch.setattr(trainer_module, "sequence_logps", counting)
    return count


def _losses(result) -> list[float]:
    return [r["loss"] for r in result.metrics if "loss" in r]


@pytest.mark.slow
def test_cached_reference_gives_the_same_losses_and_is_reused(tmp_path, tiny_model_dir, forwards):
    plain = train(_config(tmp_path, tiny_model_dir, "plain", "reference_cache=false"))
    assert forwards["n"] == 2 * 4  # 4 steps, a policy and a reference forward each
    forwards["n"] = 0
    cached = train(_config(tmp_path, tiny_model_dir, "cached"))
    # Epoch 1 computes each pair's reference once; epoch 2 reads all of them.
    assert forwards["n"] == 2 * 2 + 2
    assert _losses(cached) == pytest.approx(_losses(plain), abs=1e-6)
    caches = list((cache_dir() / "reference").glob("*.sqlite"))
    assert len(caches) == 1 and len(ReferenceCache(caches[0])) == 8

    forwards["n"] = 0  # a rerun on the same model and data never runs the reference
    again = train(_config(tmp_path, tiny_model_dir, "again"))
    assert forwards["n"] == 4
    assert _losses(again) == pytest.approx(_losses(plain), abs=1e-6)


@pytest.mark.slow
def test_full_fine_tuning_loads_no_reference_copy_once_the_cache_is_warm(
    tmp_path, tiny_model_dir, monkeypatch
):
    import prefkit.train.recipe as train_module

    loads = {"n": 0}
    real = train_module.load_base_model

    def counting(*args, **kwargs):
        loads["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "load_base_model", counting)
    full = ("finetuning_type=full", "learning_rate=1e-4")
    plain = train(_config(tmp_path, tiny_model_dir, "plain", *full, "reference_cache=false"))
    cold = train(_config(tmp_path, tiny_model_dir, "cold", *full))
    assert loads["n"] == 1  # the copy for filling the cache, freed before training
    assert [r for r in read_metrics(tmp_path / "cold" / "metrics.jsonl") if "loss" in r]
    assert _losses(cold) == pytest.approx(_losses(plain), abs=1e-5)
    loads["n"] = 0
    warm = train(_config(tmp_path, tiny_model_dir, "warm", *full))
    assert loads["n"] == 0
    assert _losses(warm) == pytest.approx(_losses(plain), abs=1e-5)


def test_identity_follows_the_weights_and_the_precision(tmp_path, tiny_model_dir):
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    cache = tmp_path / "cache"
    first = reference_identity(str(copy), None, torch.float32, cache)
    assert reference_identity(str(copy), None, torch.float32, cache) == first
    assert reference_identity(str(copy), None, torch.bfloat16, cache) != first
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(1, 1))
    changed = reference_identity(str(copy), None, torch.float32, cache)
    assert changed != first
    assert folder_digest("some/hub-id", cache) == "hub:some/hub-id"
    # Remote code changes the outputs; a checkpoint's optimizer state and the tokenizer's files do not.
    (copy / "optimizer.pt").write_bytes(b"state")
    (copy / "tokenizer_config.json").write_text('{"chat_template": "edited"}')
    assert reference_identity(str(copy), None, torch.float32, cache) == changed
    (copy / "modeling_custom.py").write_text("# remote code\n")
    assert reference_identity(str(copy), None, torch.float32, cache) != changed
    quantised = reference_identity(str(copy), None, torch.float32, cache, {"bits": 4, "type": "nf4"})
    assert quantised != reference_identity(str(copy), None, torch.float32, cache)


def test_non_finite_values_are_never_cached(tmp_path):
    cache = ReferenceCache(tmp_path / "c.sqlite")
    cache.put(
        ["a", "b", "c"], torch.tensor([-1.0, float("nan"), -2.0]), torch.tensor([-3.0, -4.0, float("inf")])
    )
    assert cache.lookup(["a", "b", "c"]).keys() == {"a"}
    assert cache.get(["a", "b"]) is None
    chosen, rejected = cache.get(["a", "a"])
    assert chosen.tolist() == [-1.0, -1.0] and rejected.tolist() == [-3.0, -3.0]
