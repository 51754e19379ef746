"""Every example config loads, validates, and points at files that exist."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefkit.builtin import resolve_data_path
from prefkit.config import load_config
from prefkit.losses import LOSSES
from prefkit.models import BUILTIN_MODELS
from prefkit.train import training_arguments

ROOT = Path(__file__).parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def test_there_is_an_example_for_every_method_and_sft():
    names = {p.stem for p in EXAMPLES}
    assert set(LOSSES) <= names and "sft" in names and "sft_then_simpo" in names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_loads_and_validates(path, monkeypatch):
    monkeypatch.chdir(ROOT)  # examples name their DeepSpeed/FSDP files relative to the repository
    warnings: list[str] = []
    cfg = load_config(path, warn=warnings.append)
    assert not warnings, warnings  # examples use prefkit's keys only
    for data in (cfg.train_file, cfg.eval_file):
        if data:
            assert resolve_data_path(data).is_file(), data
    models = cfg.model_name_or_path if isinstance(cfg.model_name_or_path, list) else [cfg.model_name_or_path]
    assert all(m in BUILTIN_MODELS or "/" in m for m in models)
    for key in ("deepspeed", "fsdp_config"):
        if key in cfg.training_arguments:
            json.loads(Path(cfg.training_arguments[key]).read_text())
    if not path.name.startswith(("gpu_", "multi_gpu_")):  # these need CUDA (fp16, bitsandbytes, DeepSpeed)
        args = training_arguments(cfg)
        assert args.learning_rate == cfg.learning_rate and args.bf16 == cfg.bf16


def test_gpu_examples_carry_the_seed_setups():
    swallow = load_config(ROOT / "examples" / "gpu_tinyswallow_qlora_dpo.yaml")
    assert swallow.model_name_or_path[0] == "SakanaAI/TinySwallow-1.5B-Instruct"
    assert (swallow.quantization_bit, swallow.lora_rank, swallow.lora_alpha) == (4, 16, 32)
    assert swallow.lora_target == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert (
        swallow.learning_rate,
        swallow.per_device_train_batch_size,
        swallow.gradient_accumulation_steps,
        swallow.max_steps,
    ) == (5e-7, 1, 8, 500)
    dialo = load_config(ROOT / "examples" / "gpu_dialogpt_small_dpo.yaml")
    assert (dialo.model_name_or_path, dialo.learning_rate, dialo.cutoff_len) == (
        "microsoft/DialoGPT-small",
        5e-6,
        128,
    )
    two_stage = load_config(ROOT / "examples" / "sft_then_simpo.yaml")
    assert two_stage.adapter_name_or_path == load_config(ROOT / "examples" / "sft.yaml").output_dir
