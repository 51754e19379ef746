"""Every example config is usable: it loads with no warning, its data passes `prefkit data check` with a
tokenizer of its model's family at its cutoff_len and template, and it trains two steps (and evaluates,
where it evaluates) on a tiny model of that family, with the model swapped and only what needs CUDA
turned off. The LoRA targets it names must exist in that architecture; an SFT -> SimPO example must
continue the adapter its first stage writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from tiny import build_family

from prefkit.builtin import resolve_data_path
from prefkit.config import load_config
from prefkit.data.load import check_data
from prefkit.env import bf16_supported
from prefkit.model.loader import load_tokenizer
from prefkit.train.losses import LOSSES
from prefkit.train.recipe import train

ROOT = Path(__file__).parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))

# Which tiny architecture stands in for the model an example names.
FAMILY_OF = {
    "smollm2-135m-instruct": "llama",
    "microsoft/DialoGPT-small": "gpt2",
    "SakanaAI/TinySwallow-1.5B-Instruct": "qwen2",
    "Qwen/Qwen2.5-1.5B-Instruct": "qwen2",
    "gemma3-270m": "gemma3",
}


@pytest.fixture(scope="module")
def family_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("example-families")
    return {name: build_family(name, root / name) for name in set(FAMILY_OF.values())}


def test_there_is_an_example_for_every_method_and_sft():
    names = {p.stem for p in EXAMPLES}
    assert set(LOSSES) <= names and "sft" in names and "sft_then_simpo" in names


def load_example(path: Path):
    warnings: list[str] = []
    cfg = load_config(path, warn=warnings.append)
    assert not warnings, warnings  # examples use prefkit's keys only
    return cfg


def on_this_machine(cfg, model: Path, output_dir: Path) -> list[str]:
    """Overrides that run the example here: the tiny model, two steps, nothing that needs CUDA."""
    overrides = [
        f"model_name_or_path={model}",
        f"output_dir={output_dir}",
        "max_steps=2",
        "save_steps=2",
        "logging_steps=1",
        "plot_loss=false",
        "fp16=false",  # CUDA only
        f"bf16={str(cfg.bf16 and bf16_supported()).lower()}",
    ]
    if cfg.eval_strategy == "steps":
        overrides.append("eval_steps=2")
    return overrides


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_checks_its_data_and_trains(path, family_models, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # examples name their DeepSpeed/FSDP files relative to the repository
    cfg = load_example(path)
    for key in ("deepspeed", "fsdp_config"):
        if key in cfg.training_arguments:
            json.loads(Path(cfg.training_arguments[key]).read_text())
    candidates = (
        cfg.model_name_or_path if isinstance(cfg.model_name_or_path, list) else [cfg.model_name_or_path]
    )
    families = {FAMILY_OF[m] for m in candidates}
    assert len(families) == 1, candidates  # a list of candidates names one kind of model
    model = family_models[families.pop()]

    data = [resolve_data_path(f) for f in (cfg.train_file, cfg.eval_file) if f]
    # As `prefkit data check FILE --model M` runs: the format (and stage) read off the file. (An SFT example
    # trains on a preference file's chosen replies; `check_data(stage="sft")` would refuse that file.)
    report = check_data(
        data, tokenizer=load_tokenizer(str(model)), cutoff_len=cfg.cutoff_len, template=cfg.template
    )
    assert report.ok, [str(p) for p in report.errors[:5]]

    if cfg.training_arguments.get("deepspeed") or cfg.training_arguments.get("fsdp"):
        # tests/test_fsdp.py and tests/test_deepspeed.py run them, with several processes.
        pytest.skip("DeepSpeed and FSDP need several processes; the config and its JSON are checked above")
    overrides = on_this_machine(cfg, model, tmp_path / "run")
    if cfg.adapter_name_or_path:  # stage 2: train stage 1's example first, and continue its adapter
        [stage_1] = [p for p in EXAMPLES if load_example(p).output_dir == cfg.adapter_name_or_path]
        first = load_example(stage_1)
        train(load_config(stage_1, on_this_machine(first, model, tmp_path / "sft")))
        overrides.append(f"adapter_name_or_path={tmp_path / 'sft'}")
    result = train(load_config(path, overrides))

    steps = [r for r in result.metrics if "loss" in r and "train_runtime" not in r]
    assert len(steps) == 2 and all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in steps)
    if cfg.eval_strategy == "steps":
        assert any("eval_loss" in r and math.isfinite(r["eval_loss"]) for r in result.metrics)
    saved = "adapter_config.json" if cfg.finetuning_type == "lora" else "config.json"
    assert (result.output_dir / saved).is_file()
