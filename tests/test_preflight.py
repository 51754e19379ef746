"""Pre-flight: what would fail later is refused before the model loads. The model folders here hold a
config.json and a tokenizer but no weights, so a check that let a run through to loading would fail
with a different error (ModelLoadError) -- each test proves its refusal came first."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from test_train import config

from prefkit.train.recipe import train
from prefkit.train.run.preflight import (
    ModelSize,
    PreflightError,
    check_checkpoint_disk,
    check_disk,
    check_writable,
    estimate_size,
    preflight,
)


def weightless(tmp_path: Path, tiny_model_dir: Path, *, drop_template: bool = False, **changes) -> Path:
    """The tiny model's config (with ``changes``) and tokenizer, without weights."""
    model = tmp_path / "weightless"
    model.mkdir()
    for item in tiny_model_dir.iterdir():
        if not item.name.endswith(".safetensors"):
            shutil.copy(item, model / item.name)
    cfg = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**cfg, **changes}))
    if drop_template:
        (model / "chat_template.jinja").unlink(missing_ok=True)
        tokenizer_config = json.loads((model / "tokenizer_config.json").read_text())
        tokenizer_config.pop("chat_template", None)
        (model / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return model


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"hidden_size": 64, "num_hidden_layers": 3, "intermediate_size": 160, "num_key_value_heads": 4},
        {"tie_word_embeddings": True, "num_key_value_heads": 1},
    ],
)
def test_size_estimate_matches_the_real_parameter_count(tiny_model_dir, changes):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**{**cfg, **changes}))
    real = sum(p.numel() for p in model.parameters())
    size = estimate_size({**cfg, **changes})
    assert size is not None and abs(size.total - real) / real < 0.02  # only the norms are left out


def test_lora_estimate_matches_peft(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=targets))
    real = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    size = estimate_size(json.loads((tiny_model_dir / "config.json").read_text()))
    assert size is not None and size.lora(4) == real


def test_a_model_too_big_for_memory_is_refused_before_loading(tmp_path, tiny_model_dir):
    model = weightless(
        tmp_path, tiny_model_dir, hidden_size=16384, intermediate_size=65536, num_hidden_layers=200
    )
    with pytest.raises(PreflightError, match=r"about \d+\.\d+B parameters; full fine-tuning needs about"):
        train(config(tmp_path, model, "finetuning_type=full"))


def test_an_absurd_lora_rank_is_refused_before_loading(tmp_path, tiny_model_dir):
    model = weightless(tmp_path, tiny_model_dir)
    with pytest.raises(
        PreflightError, match=r"command line: lora_rank: got 1000000 -- expected at most the hidden"
    ):
        train(config(tmp_path, model, "lora_rank=1000000"))


def test_no_chat_template_and_no_template_is_refused_before_loading(tmp_path, tiny_model_dir):
    model = weightless(tmp_path, tiny_model_dir, drop_template=True)
    with pytest.raises(PreflightError, match=r"has no chat template .* set it to one of chatml"):
        train(config(tmp_path, model))
    preflight(config(tmp_path, model, "template=chatml"), str(model), needs_reference=False)  # named: fine


def test_a_quantisation_this_machine_cannot_run_is_refused_before_loading(tmp_path, tiny_model_dir):
    """Pre-flight quantises one small layer as the run would; where bitsandbytes fails (here: it is made
    unimportable), the run stops with the key's origin before any weights are read."""
    import sys

    model = weightless(tmp_path, tiny_model_dir)  # no weights: loading it would fail differently
    saved = sys.modules.get("bitsandbytes")
    sys.modules["bitsandbytes"] = None  # type: ignore[assignment]
    try:
        with pytest.raises(
            PreflightError,
            match=r"command line: a base quantised to 4 bits \(quantization_bit: 4\) needs bitsandbytes",
        ):
            train(config(tmp_path, model, "quantization_bit=4"))
    finally:
        if saved is None:
            del sys.modules["bitsandbytes"]
        else:
            sys.modules["bitsandbytes"] = saved


def test_an_unwritable_output_folder_is_refused_before_loading(tmp_path, tiny_model_dir):
    model = weightless(tmp_path, tiny_model_dir)
    if os.geteuid() == 0:
        # root writes through permission bits; /proc takes no new files whoever asks.
        unwritable = Path("/proc/prefkit-output")
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        unwritable = locked / "out"
    cfg = config(tmp_path, model)
    cfg.output_dir = str(unwritable)
    with pytest.raises(PreflightError, match="cannot write in"):
        train(cfg)
    (tmp_path / "a file").write_text("x")
    with pytest.raises(PreflightError, match="is not a folder, so output_dir cannot be made in it"):
        check_writable(tmp_path / "a file" / "out")


def test_too_little_disk_for_a_checkpoint_is_refused(tmp_path, tiny_model_dir):
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(PreflightError, match="free on its disk, but a checkpoint and the final model needs"):
        check_disk(tmp_path, free + 2**40, "a checkpoint and the final model")
    cfg = config(tmp_path, tiny_model_dir, "finetuning_type=full")
    # A model whose fp32 weights alone are as large as the free space: a checkpoint is 3x that.
    with pytest.raises(PreflightError, match="a checkpoint and the final model needs about"):
        check_checkpoint_disk(cfg, ModelSize(total=free // 4, hidden=4096, lora_per_rank=0))
