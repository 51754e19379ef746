"""The crash suite's CI slice: real `prefkit train` processes killed (SIGKILL) mid checkpoint and after
the final save but before the run is marked finished (the window issue #11 lost runs in), then run
again. Every rerun finishes with the uninterrupted run's losses, each step
once in metrics.jsonl, and an adapter equal to the uninterrupted one. The long run (every phase, random
moments, SIGTERM, kills during the rerun) is `python scripts/crash_trials.py`; see docs/reliability.md."""

from __future__ import annotations

import sys

import pytest
from crashkit import start, verify, wait, write_config
from toydata import toy_pairs

from prefkit.config import load_config
from prefkit.train.recipe import train

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL/SIGTERM are POSIX")


@pytest.fixture(scope="module")
def crash_setup(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("crash")
    config = write_config(folder, tiny_model_dir, toy_pairs(folder / "pairs.jsonl"))
    reference = folder / "reference"
    train(load_config(config, [f"output_dir={reference}"]))
    return folder, config, reference


@pytest.mark.slow
def test_killed_runs_resume_to_the_uninterrupted_result(crash_setup, tiny_model_dir):
    folder, config, reference = crash_setup
    kills = {"checkpoint-staged:4": folder / "mid-checkpoint", "final-marked": folder / "after-final-save"}
    # The two run side by side.
    processes = {phase: start(config, out, folder / f"{out.name}.log", phase) for phase, out in kills.items()}
    for phase, process in processes.items():
        assert wait(process) == -9, (phase, (folder / f"{kills[phase].name}.log").read_text()[-2000:])

    for out in kills.values():
        result = train(load_config(config, [f"output_dir={out}"]))
        assert result.global_step == 8
        assert verify(out, reference, tiny_model_dir) == [], out.name
    # Killed after its final save, the run is finished without training again (it was lost before).
    assert (folder / "after-final-save" / "adapter_model.safetensors").exists()
