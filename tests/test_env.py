from __future__ import annotations

from pathlib import Path

from prefkit.env import CACHE_ENV, cache_dir, environment_report


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    assert cache_dir() == Path.home() / ".cache" / "prefkit"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env"
    assert cache_dir(str(tmp_path / "setting")) == tmp_path / "setting"


def test_environment_report_names_versions_and_device(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    report = environment_report()
    import torch
    import transformers

    assert report["versions"]["torch"].startswith(torch.__version__.split("+")[0])
    assert report["versions"]["transformers"] == transformers.__version__
    assert report["device"]["device"] in {"cpu", "cuda"}
    assert isinstance(report["device"]["bf16"], bool)
    assert report["cache_dir"] == str(tmp_path) and report["cache_source"] == f"${CACHE_ENV}"
