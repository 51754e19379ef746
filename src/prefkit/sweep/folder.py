"""The sweep folder on disk: whether a folder may become one, the lock that keeps two sweeps out of one
folder, where each run stands (read from the run folders themselves), and ``state.json``, the record of
each run's last attempt (a failure and its error, timings).

A sweep folder holds ``sweep.json``, ``state.json``, the held-out pairs (``heldout.jsonl``), the base
model's evaluation (``baseline/``), one folder per run -- each a normal prefkit run folder, with the
run's ``eval.json``, ``eval.md`` and ``generations.jsonl`` added beside the model -- the worker logs
(``logs/``), and the leaderboard with its plots. A run's status is read from its folder, never trusted
to a file that could go stale: finished (its run marker says so) and evaluated (its eval.json, written
last by the evaluation, exists).
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefkit.sweep.spec import BASELINE, SPEC_FILE, SweepError
from prefkit.train.run.folder import RUN_FILE, write_json_atomic
from prefkit.train.run.lock import held

STATE_FILE = "state.json"
LOCK_FILE = ".sweep.lock"
LOG_DIR = "logs"
EVAL_FILE = "eval.json"

# Where a run stands, from its folder.
PENDING = "pending"  # nothing trained yet
INTERRUPTED = "interrupted"  # started: the next attempt resumes it from its last checkpoint
TRAINED = "trained"  # finished training, not evaluated yet
EVALUATED = "evaluated"  # finished and evaluated: skipped by a rerun


def check_sweep_folder(path: Path) -> bool:
    """True if ``path`` already is a sweep folder, False if it is absent or empty (a new sweep may start
    there); a SweepError for anything else -- a sweep never writes into a folder that is not its own."""
    if path.exists() and not path.is_dir():
        raise SweepError(f"sweep folder {path} exists and is not a folder")
    if (path / SPEC_FILE).is_file():
        return True
    # The lock file is the sweep's own: a new sweep takes its lock before it writes sweep.json.
    entries = sorted(p.name for p in path.iterdir() if p.name != LOCK_FILE) if path.is_dir() else []
    if not entries:
        return False
    what = "a prefkit run folder" if RUN_FILE in entries else f"not empty ({', '.join(entries[:5])})"
    raise SweepError(
        f"sweep folder {path} is {what} and holds no {SPEC_FILE}: a sweep writes only into a new or empty "
        "folder or a sweep folder of its own -- choose another --output-dir"
    )


def locked(path: Path) -> contextlib.AbstractContextManager[None]:
    """Hold the sweep folder's lock: a second ``prefkit sweep`` into the same folder is refused while one
    runs."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        (path / LOCK_FILE).touch()
    except OSError as err:
        raise SweepError(f"sweep folder {path}: cannot write there ({err.strerror or err})") from None
    return held(
        path / LOCK_FILE,
        lambda holder: SweepError(
            f"another prefkit sweep is running in {path} ({holder}); wait for it, or stop it first"
        ),
    )


def run_status(run_dir: Path) -> str:
    marker = run_dir / RUN_FILE
    finished = False
    if marker.is_file():
        try:
            finished = json.loads(marker.read_text(encoding="utf-8")).get("status") == "finished"
        except (OSError, ValueError, AttributeError):
            finished = False  # a broken marker: prefkit train says what is wrong with it
    if finished:
        return EVALUATED if (run_dir / EVAL_FILE).is_file() else TRAINED
    if run_dir.is_dir() and any(run_dir.iterdir()):
        return INTERRUPTED
    return PENDING


def baseline_done(sweep_dir: Path) -> bool:
    return (sweep_dir / BASELINE / EVAL_FILE).is_file()


@dataclass
class Attempt:
    ok: bool
    seconds: float
    error: str | None = None


class SweepState:
    """state.json: each run's (and the baseline's) last attempt. Written by the driver process only."""

    def __init__(self, sweep_dir: Path) -> None:
        self.path = sweep_dir / STATE_FILE
        self.jobs: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            try:
                self.jobs = json.loads(self.path.read_text(encoding="utf-8")).get("jobs", {})
            except (OSError, ValueError, AttributeError):
                self.jobs = {}  # a record only: losing it loses no run

    def record(self, name: str, attempt: Attempt) -> None:
        entry = self.jobs.setdefault(name, {"attempts": 0})
        entry.update(
            attempts=entry["attempts"] + 1,
            outcome="done" if attempt.ok else "failed",
            error=attempt.error,
            seconds=round(attempt.seconds, 1),
            at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        write_json_atomic(self.path, {"jobs": self.jobs})

    def error(self, name: str) -> str | None:
        entry = self.jobs.get(name)
        return entry.get("error") if entry and entry.get("outcome") == "failed" else None
