"""The crash suite's machinery: run a real `prefkit train` in a subprocess, kill it (SIGKILL at a named
phase through prefkit's PREFKIT_TEST_KILL_AT hook, at a random moment, or SIGTERM), run it again, and
check the result against an uninterrupted run. Shared by tests/test_crash.py (the CI slice) and
scripts/crash_trials.py (the long run)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

# Every phase boundary prefkit.train.run.folder.crash_point marks, in the order a run passes them.
PHASES = (
    "checkpoint-staged",  # a checkpoint fully written in .staging, not yet renamed into place
    "checkpoint-saved",  # renamed into place, before rotation
    "removing",  # rotation: an old checkpoint renamed aside, not yet deleted
    "final-staged",  # the final model written in .staging/final, marker still "running"
    "final-marked",  # marker "saving-final", nothing moved yet (issue #11's lost window)
    "final-moving",  # the first final file moved into place
    "final-moved",  # every final file in place, before plots and "finished"
)

RECIPE = {
    "stage": "dpo",
    "pref_loss": "sigmoid",
    "lora_rank": 8,
    "lora_dropout": 0.1,  # the dropout RNG must be restored exactly too
    "learning_rate": 5.0e-3,
    "lr_scheduler_type": "cosine",
    "warmup_ratio": 0.2,
    "per_device_train_batch_size": 4,
    "max_steps": 8,
    "save_steps": 2,
    "save_total_limit": 2,
    "logging_steps": 1,
    "cutoff_len": 64,
    "report_to": "none",
}


def write_config(folder: Path, model: Path, data: Path, **changes: object) -> Path:
    path = folder / "crash.yaml"
    values = {**RECIPE, "model_name_or_path": str(model), "train_file": str(data), **changes}
    path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items()), encoding="utf-8")
    return path


def start(config: Path, out: Path, log: Path, kill_at: str | None = None) -> subprocess.Popen:
    """`prefkit train CONFIG output_dir=OUT` as a user runs it, with the crash hook armed or not."""
    env = {k: v for k, v in os.environ.items() if k != "PREFKIT_TEST_KILL_AT"}
    env["OMP_NUM_THREADS"] = "1"
    if kill_at:
        env["PREFKIT_TEST_KILL_AT"] = kill_at
    command = [sys.executable, "-m", "prefkit", "train", str(config), f"output_dir={out}"]
    handle = log.open("w")
    return subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT)


def wait(process: subprocess.Popen, timeout: float = 600) -> int:
    return process.wait(timeout=timeout)


def kill_at_random(
    process: subprocess.Popen, rng: random.Random, span: float, when: Callable[[], bool] | None = None
) -> float:
    """SIGKILL at a random moment: once ``when()`` holds (at once without it), after a delay drawn from
    [0, span) seconds -- unless the process ends first. Returns the delay."""
    while when is not None and process.poll() is None and not when():
        time.sleep(0.02)
    delay = rng.uniform(0, span)
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait()
    return delay


def sigterm_when_training(process: subprocess.Popen, out: Path, after_records: int = 3) -> None:
    """SIGTERM once ``after_records`` metrics records are written (training is under way)."""
    metrics = out / "metrics.jsonl"
    while process.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= after_records:
            process.send_signal(signal.SIGTERM)
            return
        time.sleep(0.05)


def losses(out: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def verify(out: Path, reference: Path, model: Path) -> list[str]:
    """What must hold after the rerun, as a list of failures (empty: the run survived)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    failures = []
    marker = json.loads((out / "prefkit_run.json").read_text())
    if marker["status"] != "finished":
        failures.append(f"marker status {marker['status']}")
    steps = [
        json.loads(line)["step"]
        for line in (out / "metrics.jsonl").read_text().splitlines()
        if line and "loss" in json.loads(line)
    ]
    expected = sorted(losses(reference))
    if steps != expected:
        failures.append(f"metrics steps {steps}, expected each of {expected} once")
    got, want = losses(out), losses(reference)
    for step in want:
        if step in got and abs(got[step] - want[step]) > 1e-5 * max(1.0, abs(want[step])):
            failures.append(f"step {step}: loss {got[step]} != uninterrupted {want[step]}")
    if (out / ".staging").exists():
        failures.append(".staging left behind")
    base = AutoModelForCausalLM.from_pretrained(model)
    adapter = PeftModel.from_pretrained(base, out).state_dict()
    expected_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model), reference)
    for name, tensor in expected_adapter.state_dict().items():
        if "lora_" in name and not torch.allclose(adapter[name], tensor, atol=1e-6):
            failures.append(f"final adapter differs from the uninterrupted run's at {name}")
            break
    return failures
