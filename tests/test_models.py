"""Model resolution: builtin aliases, .gguf files, local folders, hub ids, and candidate lists."""

from __future__ import annotations

import logging

import pytest

from prefkit.models import ModelLoadError, _gguf_cache_name, _why, resolve_first, resolve_model


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
