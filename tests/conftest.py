from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny import build_tiny_adapter, build_tiny_model, build_tokenizer

NO_CUDA = "needs a CUDA GPU (torch.cuda.is_available() is false); on one: python benchmarks/gpu_check.py"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The `gpu` marker alone makes a test skip, with the reason, where there is no CUDA."""
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu:
        return
    import torch

    if not torch.cuda.is_available():
        for item in gpu:
            item.add_marker(pytest.mark.skip(reason=NO_CUDA))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny Llama and its 512-token tokenizer, saved once per test session."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_adapters(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two LoRA adapters of different ranks for the tiny model, named a and b."""
    root = tmp_path_factory.mktemp("adapters")
    return {
        "a": build_tiny_adapter(tiny_model_dir, root / "a", seed=1, rank=4),
        "b": build_tiny_adapter(tiny_model_dir, root / "b", seed=2, rank=8),
    }


@pytest.fixture(scope="session", autouse=True)
def reference_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Runs in tests cache reference log-probs (under `<cache>/reference`): keep them out of the user's
    cache. Converted builtin models (`<cache>/models`) are shared with the real cache, so the builtin
    SmolLM2 is converted once, not once per test session."""
    real = Path(os.environ.get("PREFKIT_CACHE") or Path.home() / ".cache" / "prefkit").expanduser()
    cache = tmp_path_factory.mktemp("prefkit-cache")
    (real / "models").mkdir(parents=True, exist_ok=True)
    (cache / "models").symlink_to(real / "models", target_is_directory=True)
    previous = os.environ.get("PREFKIT_CACHE")
    os.environ["PREFKIT_CACHE"] = str(cache)
    yield
    if previous is None:
        os.environ.pop("PREFKIT_CACHE", None)
    else:
        os.environ["PREFKIT_CACHE"] = previous
