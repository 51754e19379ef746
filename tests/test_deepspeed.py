"""DeepSpeed ZeRO-2 and ZeRO-3 on 2 CPU processes (torchrun; DeepSpeed's CPU accelerator over gloo), with
the example configs in examples/deepspeed: the model really is in DeepSpeed's hands (ZeRO-3: half of it on
each process), LoRA and full fine-tuning follow one process's loss curve, checkpoints resume exactly, the
saved adapter or model loads with plain from_pretrained and holds the trained weights. Skipped where
DeepSpeed is not installed (it is not a prefkit dependency)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from test_fsdp import (
    check_follows_one_process,
    check_resumed_exactly,
    check_saved_weights,
    launch,
    overrides,
)
from toydata import toy_pairs, toy_sft

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="torchrun/gloo test written for Linux"),
    pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="DeepSpeed is not installed"),
]

EXAMPLES = Path(__file__).parents[1] / "examples" / "deepspeed"

# name -> (stage, finetuning_type, extra settings, ZeRO stage). z3_full_dpo runs without the reference
# cache: its frozen reference copy is loaded for the whole run (whole: see prefkit.train.sharding).
JOBS = {
    "z3_lora_dpo": ("dpo", "lora", [], 3),
    "z3_full_dpo": ("dpo", "full", ["reference_cache=false"], 3),
    "z2_sft_full": ("sft", "full", [], 2),
}


@pytest.fixture(scope="module")
def launched(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    """One torchrun launch of 2 processes: LoRA DPO under ZeRO-3 stopped at step 3 and resumed in its
    folder; full DPO under ZeRO-3, then resumed from its checkpoint-2 into another folder; full SFT under
    ZeRO-2."""
    tmp = tmp_path_factory.mktemp("deepspeed")
    data = {"dpo": toy_pairs(tmp / "pairs.jsonl"), "sft": toy_sft(tmp / "sft.jsonl")}
    folders = {name: tmp / name for name in [*JOBS, "z3_full_resumed"]}
    jobs = []
    for name, (stage, finetuning, extra, zero) in JOBS.items():
        ds = f"deepspeed={EXAMPLES / f'ds_z{zero}.json'}"
        job = overrides(tiny_model_dir, data[stage], folders[name], stage, finetuning, 2, *extra, ds)
        jobs.append([name, None, job, 3 if name == "z3_lora_dpo" else 0])
        if name == "z3_full_dpo":
            resume = [
                f"output_dir={folders['z3_full_resumed']}",
                f"resume_from_checkpoint={folders[name]}/checkpoint-2",
            ]
            jobs.append(["z3_full_resumed", None, job + resume, 0])
    launch(tmp, jobs)
    return {**folders, "root": tmp, **{f"data_{k}": v for k, v in data.items()}}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(JOBS))
def test_deepspeed_holds_the_model_and_follows_one_process(launched, tiny_model_dir, tmp_path, name):
    facts = json.loads((launched[name] / "facts.json").read_text())
    zero = JOBS[name][3]
    assert facts["zero_stage"] == zero  # a DeepSpeed engine trained it, not DDP
    if zero == 3:  # the parameters are partitioned: about half on each process (DeepSpeed pads them)
        assert facts["local_fraction"] == pytest.approx(0.5, abs=0.05)
    resumed = "z3_full_resumed" if name == "z3_full_dpo" else None
    check_follows_one_process(launched, tiny_model_dir, tmp_path, JOBS[name], name, resumed)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(JOBS))
def test_saved_adapter_or_model_loads_with_the_trained_weights(launched, tiny_model_dir, name):
    # Checkpoints hold DeepSpeed's resume state too: its global_step folder (per-process shards).
    files = ["latest", "global_step4"]
    check_saved_weights(launched[name], tiny_model_dir, JOBS[name][1] == "lora", files)


@pytest.mark.slow
def test_resuming_from_a_deepspeed_checkpoint_is_exact(launched):
    check_resumed_exactly(launched["z3_full_dpo"], launched["z3_full_resumed"])
    record = json.loads((launched["z3_lora_dpo"] / "training_config.json").read_text())
    assert [r["step"] for r in record["resumed"]] == [2]
