from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny import build_tiny_adapter, build_tiny_model, build_tokenizer


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
