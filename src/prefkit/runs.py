"""The state of an output folder: finished, resumable from a checkpoint, or fresh -- and the rules that
keep a user's finished work from being overwritten."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefkit.errors import PrefkitError

logger = logging.getLogger(__name__)

RUN_FILE = "prefkit_run.json"  # written last, atomically, when a run has finished and saved its model
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# Files a finished model leaves at the top of a folder, ours or another tool's.
MODEL_FILES = (
    "adapter_model.safetensors",
    "adapter_model.bin",
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
)
# What a run of ours writes at the top of output_dir, removed by overwrite_output_dir.
RUN_ARTIFACTS = (
    RUN_FILE,
    "metrics.jsonl",
    "loss.png",
    "rewards.png",
    "training_config.json",
    "adapter_config.json",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "README.md",
    "training_args.bin",
    *MODEL_FILES,
)


class OutputDirError(PrefkitError):
    pass


def write_text_atomic(path: Path, text: str) -> None:
    """Write beside ``path``, then rename over it: a reader sees the old file or the new, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, default=str))


def checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints (a checkpoint exists under its name only once fully written), oldest first."""
    if not output_dir.is_dir():
        return []
    found = [
        (int(m.group(1)), p) for p in output_dir.iterdir() if p.is_dir() and (m := CHECKPOINT.match(p.name))
    ]
    return [p for _, p in sorted(found) if (p / "trainer_state.json").is_file()]


@dataclass
class RunState:
    output_dir: Path
    finished: bool
    model_files: list[str]
    checkpoints: list[Path]

    @property
    def latest(self) -> Path | None:
        return self.checkpoints[-1] if self.checkpoints else None


def inspect(output_dir: Path) -> RunState:
    finished = (output_dir / RUN_FILE).is_file() and json.loads((output_dir / RUN_FILE).read_text()).get(
        "status"
    ) == "finished"
    model_files = [name for name in MODEL_FILES if (output_dir / name).exists()]
    return RunState(output_dir, finished, model_files, checkpoints(output_dir))


def clear_run(output_dir: Path) -> None:
    """Remove a previous run's files (overwrite_output_dir: true); anything else in the folder stays."""
    for name in RUN_ARTIFACTS:
        (output_dir / name).unlink(missing_ok=True)
    for path in output_dir.iterdir() if output_dir.is_dir() else []:
        if path.is_dir() and (CHECKPOINT.match(path.name) or path.name == ".staging"):
            shutil.rmtree(path)


def plan_start(output_dir: Path, overwrite: bool, resume: str | bool) -> tuple[Path | None, bool]:
    """(checkpoint to resume from or None, whether to clear the previous run first), or an error.

    Changes nothing on disk, so every process of a distributed run can call it and agree."""
    state = inspect(output_dir)
    if state.finished or state.model_files:
        if not overwrite:
            what = "a finished run" if state.finished else f"a saved model ({', '.join(state.model_files)})"
            raise OutputDirError(
                f"output_dir {output_dir} holds {what}; the model is in {output_dir}. prefkit will not "
                "overwrite it: choose another output_dir, or set overwrite_output_dir: true to replace it."
            )
        logger.warning("overwrite_output_dir: true -- replacing the run in %s", output_dir)
        return None, True
    if not state.checkpoints:
        if resume not in (False, "auto"):
            return _explicit_checkpoint(Path(resume)), False
        return None, False
    if overwrite:
        logger.warning("overwrite_output_dir: true -- discarding the unfinished run in %s", output_dir)
        return None, True
    if resume is False:
        raise OutputDirError(
            f"output_dir {output_dir} has checkpoints of an unfinished run ({state.latest.name} is the "
            "latest) and resume_from_checkpoint is false: set resume_from_checkpoint: auto to continue it, "
            "or overwrite_output_dir: true to start again."
        )
    if resume == "auto":
        return state.latest, False
    return _explicit_checkpoint(Path(resume)), False


def _explicit_checkpoint(path: Path) -> Path:
    if not (path / "trainer_state.json").is_file():
        raise OutputDirError(
            f"resume_from_checkpoint: {path} is not a complete checkpoint (no trainer_state.json in it)"
        )
    return path
