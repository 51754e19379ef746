"""The runs directory as the page sees it: every prefkit run folder and evaluation under it, each with an
id, a status and a summary -- read tolerantly, so a broken file is a sentence on the page, never a 500.

**Ids.** A run's id is a hash of its path relative to the runs directory. A request names an id; the id
is looked up among the folders a scan found; nothing a request sends is ever joined to a path. The scan
does not follow symlinked folders, skips hidden folders and ``checkpoint-N``, and stops at
``MAX_DEPTH`` levels and ``MAX_FOLDERS`` folders.

**What is a run.** A folder holding ``prefkit_run.json`` (the run marker), ``training_config.json`` or
``metrics.jsonl``: prefkit 0.1.0 writes the marker only when a run finishes; later versions write it
when the run starts, with ``status`` running, saving-final or finished. **What is an evaluation.** A
folder holding ``eval.json`` (``prefkit eval``). It belongs to the run it lies in, else to the run whose
folder its ``settings.adapter`` names, else it is listed on its own.

**Status.** ``finished`` when the marker says so. Otherwise the run was started and has not finished: it
is ``running`` while its files keep changing and ``interrupted`` once they have not changed for
``max(STALE_AFTER, STALE_FACTOR x its usual gap between log records)`` -- a killed process leaves no
other trace (the marker names no process), and this works for a run on another machine sharing the
folder. A run that is merely slow (a long evaluation, a checkpoint of a large model) can show
interrupted for a while and comes back to running at its next write. A marker that cannot be read gives
``unknown``, with the reason.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefkit.errors import PrefkitError
from prefkit.ui.files import contained, mtime, read_json, read_text
from prefkit.ui.metrics import head, tail

RUN_MARKER = "prefkit_run.json"
METRICS = "metrics.jsonl"
CONFIG = "training_config.json"
EVAL_REPORT = "eval.json"
EVAL_MARKDOWN = "eval.md"
EVAL_GENERATIONS = "generations.jsonl"
RUN_FILES = (RUN_MARKER, CONFIG, METRICS)

MAX_DEPTH = 5  # levels below the runs directory (LLaMA-Factory's saves/MODEL/lora/NAME is 3)
MAX_FOLDERS = 20_000  # folders visited per scan
SKIPPED = {"node_modules", "__pycache__", "site-packages", "wandb", "mlruns"}
STALE_AFTER = 300.0  # seconds without a write before a started run counts as interrupted ...
STALE_FACTOR = 5.0  # ... or this many times its usual gap between log records, when that is longer
UNFINISHED = ("running", "saving-final")  # marker statuses of a run that has not finished
SAMPLE_REPLIES = 8  # generations shown with an evaluation

# The settings the runs list shows (the page shows every resolved setting on a run's own view).
KEY_SETTINGS = (
    "finetuning_type",
    "learning_rate",
    "pref_beta",
    "simpo_gamma",
    "pref_ftx",
    "lora_rank",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_steps",
    "num_train_epochs",
    "cutoff_len",
    "dataset",
    "train_file",
)
LATEST = ("loss", "rewards/margins", "rewards/accuracies", "eval_loss", "eval_rewards/accuracies")


@dataclass(frozen=True)
class Folder:
    id: str
    name: str  # the path relative to the runs directory, "/"-separated ("." for the directory itself)
    path: Path


@dataclass
class Scan:
    runs: dict[str, Folder]
    evals: dict[str, Folder]
    truncated: bool  # the scan stopped at MAX_FOLDERS


def folder_id(kind: str, name: str) -> str:
    return hashlib.blake2b(f"{kind}:{name}".encode(), digest_size=6).hexdigest()


def _skipped(name: str) -> bool:
    return name.startswith(".") or name.startswith("checkpoint-") or name in SKIPPED


def scan(root: Path) -> Scan:
    """Every run and evaluation folder under ``root`` (resolved), breadth first."""
    runs: dict[str, Folder] = {}
    evals: dict[str, Folder] = {}
    queue: deque[tuple[Path, str, int]] = deque([(root, ".", 0)])
    visited = 0
    while queue and visited < MAX_FOLDERS:
        path, name, depth = queue.popleft()
        visited += 1
        try:
            with os.scandir(path) as entries:
                listed = list(entries)
        except OSError:
            continue
        names = {e.name for e in listed}
        if any(f in names for f in RUN_FILES):
            runs_id = folder_id("run", name)
            runs[runs_id] = Folder(runs_id, name, path)
        if EVAL_REPORT in names:
            eval_id = folder_id("eval", name)
            evals[eval_id] = Folder(eval_id, name, path)
        if depth >= MAX_DEPTH:
            continue
        for entry in sorted(listed, key=lambda e: e.name):
            try:
                is_dir = entry.is_dir(follow_symlinks=False)  # a symlinked folder is never entered
            except OSError:
                continue
            if is_dir and not _skipped(entry.name):
                child = entry.name if name == "." else f"{name}/{entry.name}"
                queue.append((Path(entry.path), child, depth + 1))
    return Scan(runs, evals, truncated=bool(queue))


def _ago(seconds: float) -> str:
    if seconds < 60:
        return f"{int(seconds)} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours < 48 else f"{hours // 24} days"


def run_status(
    marker: Any, marker_problem: str | None, activity: float | None, typical_gap: float | None, now: float
) -> tuple[str, str]:
    """(status, a sentence saying why) -- see the module docstring."""
    if marker_problem is not None:
        return "unknown", marker_problem
    if marker is not None:
        status = marker.get("status") if isinstance(marker, dict) else None
        if status == "finished":
            return "finished", ""
        if status not in UNFINISHED:
            return "unknown", f"{RUN_MARKER}: status {str(status)[:40]!r} is not one prefkit writes"
    if activity is None:
        return "unknown", "no file of the run can be read"
    idle = max(0.0, now - activity)
    limit = max(STALE_AFTER, STALE_FACTOR * (typical_gap or 0.0))
    if idle <= limit:
        return "running", f"last write {_ago(idle)} ago"
    return "interrupted", (
        f"not finished, and nothing written for {_ago(idle)}: its process stopped (or is stuck). "
        "Run the same prefkit train command to resume it"
    )


def _count(value: Any) -> bool:
    """Whether ``value`` is a positive whole number (a file read as it is may hold anything anywhere)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def key_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The settings that tell runs apart at a glance, leaving out those that do nothing in this run."""
    stage, loss = config.get("stage"), config.get("pref_loss")
    ignored = set()
    if stage != "dpo":
        ignored |= {"pref_beta", "simpo_gamma", "pref_ftx"}
    if loss != "simpo":
        ignored.add("simpo_gamma")
    if not config.get("pref_ftx"):
        ignored.add("pref_ftx")
    if config.get("finetuning_type") not in ("lora", "qlora"):
        ignored.add("lora_rank")
    if config.get("gradient_accumulation_steps") == 1:
        ignored.add("gradient_accumulation_steps")
    if _count(config.get("max_steps")):
        ignored.add("num_train_epochs")
    else:
        ignored.add("max_steps")
    return {k: config[k] for k in KEY_SETTINGS if k not in ignored and config.get(k) not in (None, "", [])}


class RunsDir:
    """The runs directory: a scan (kept for ``ttl`` seconds) and readers for what the page shows."""

    def __init__(self, root: Path | str, ttl: float = 2.0) -> None:
        self.root = Path(root).expanduser().resolve()
        self.ttl = ttl
        self._scan: Scan | None = None
        self._scanned_at = 0.0
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path | str) -> RunsDir:
        """The runs directory at ``path``, or a PrefkitError saying why it cannot be one."""
        runs = cls(path)
        if not runs.root.is_dir():
            raise PrefkitError(f"--runs {path}: not a folder")
        return runs

    def scan(self, fresh: bool = False) -> Scan:
        """The folders found; ``fresh`` rescans unless the last scan is under half a second old (so that
        requests naming ids that do not exist cannot make the server walk the folder again and again)."""
        with self._lock:
            age = time.monotonic() - self._scanned_at
            if self._scan is None or age > self.ttl or (fresh and age > 0.5):
                self._scan = scan(self.root)
                self._scanned_at = time.monotonic()
            return self._scan

    def run(self, run_id: str) -> Folder | None:
        """The run with this id; a miss rescans once (a run that appeared since)."""
        found = self.scan().runs.get(run_id)
        return found if found is not None else self.scan(fresh=True).runs.get(run_id)

    def eval(self, eval_id: str) -> Folder | None:
        found = self.scan().evals.get(eval_id)
        return found if found is not None else self.scan(fresh=True).evals.get(eval_id)

    # -- a run ---------------------------------------------------------------------------------------
    def summary(self, run: Folder, now: float | None = None) -> dict[str, Any]:
        """What the runs list shows of a run."""
        problems: list[str] = []
        marker, marker_problem = read_json(self.root, run.path / RUN_MARKER)
        if marker is not None and not isinstance(marker, dict):
            marker, marker_problem = None, f"{RUN_MARKER}: not a JSON object"
        record, problem = read_json(self.root, run.path / CONFIG)
        if problem:
            problems.append(problem)
        record = record if isinstance(record, dict) else {}
        config = record.get("config") if isinstance(record.get("config"), dict) else {}
        if (run.path / METRICS).is_symlink() and contained(self.root, run.path / METRICS) is None:
            problems.append(f"{METRICS}: leads outside the runs directory (a symlink?); not read")
        records = tail(self.root, run.path / METRICS)
        steps = [r["step"] for r in records if _count(r.get("step"))]
        step = steps[-1] if steps else (marker or {}).get("global_step")
        step = step if _count(step) else None
        latest: dict[str, Any] = {}
        for r in records:
            latest.update({k: r[k] for k in LATEST if k in r})
        activity = self._activity(run.path)
        started = mtime(run.path / CONFIG)
        gap = self._typical_gap(config, started, activity, step)
        status, why = run_status(marker, marker_problem, activity, gap, now or time.time())
        stage = record.get("stage") or config.get("stage")
        method = (record.get("pref_loss") or config.get("pref_loss")) if stage == "dpo" else stage
        max_steps = config.get("max_steps")
        return {
            "id": run.id,
            "name": run.name,
            "status": status,
            "status_detail": why,
            "stage": stage,
            "method": method,
            "model": record.get("model_name_or_path") or config.get("model_name_or_path"),
            "settings": key_settings(config),
            "step": step,
            "max_steps": max_steps if _count(max_steps) else None,
            "latest": latest,
            "updated": activity,
            "train_seconds": (marker or {}).get("train_seconds"),
            "problems": problems,
        }

    def _activity(self, path: Path) -> float | None:
        """The newest modification time among the run's own files and checkpoint folders."""
        times = [mtime(path / name) for name in (*RUN_FILES, ".staging")]
        try:
            with os.scandir(path) as entries:
                times += [mtime(Path(e.path)) for e in entries if e.name.startswith("checkpoint-")]
        except OSError:
            pass
        known = [t for t in times if t is not None]
        return max(known) if known else None

    @staticmethod
    def _typical_gap(
        config: dict[str, Any], started: float | None, activity: float | None, step: Any
    ) -> float | None:
        """Seconds between log records so far: (last write - start) / records logged."""
        if started is None or activity is None or not _count(step):
            return None
        every = config.get("logging_steps")
        logged = step / every if _count(every) else step
        return max(0.0, activity - started) / max(1.0, logged)

    def config(self, run: Folder) -> dict[str, Any]:
        """The run's training_config.json (the resolved config and what the run was given) and marker."""
        record, problem = read_json(self.root, run.path / CONFIG)
        marker, marker_problem = read_json(self.root, run.path / RUN_MARKER)
        return {
            "id": run.id,
            "record": record if isinstance(record, dict) else None,
            "marker": marker if isinstance(marker, dict) else None,
            "problems": [p for p in (problem, marker_problem) if p],
        }

    # -- evaluations ---------------------------------------------------------------------------------
    def evals_by_run(self) -> tuple[dict[str, list[Folder]], list[Folder]]:
        """({run id: its evaluations}, evaluations that belong to no run)."""
        found = self.scan()
        by_path = {run.path: run.id for run in found.runs.values()}
        attached: dict[str, list[Folder]] = {}
        loose: list[Folder] = []
        for ev in found.evals.values():
            owner = self._owner(ev, by_path)
            if owner is None:
                loose.append(ev)
            else:
                attached.setdefault(owner, []).append(ev)
        return attached, loose

    def _owner(self, ev: Folder, by_path: dict[Path, str]) -> str | None:
        for folder in (ev.path, *ev.path.parents):
            if folder in by_path:
                return by_path[folder]
            if folder == self.root:
                break
        report, _ = read_json(self.root, ev.path / EVAL_REPORT)
        settings = report.get("settings") if isinstance(report, dict) else None
        adapter = settings.get("adapter") if isinstance(settings, dict) else None
        if not isinstance(adapter, str) or not adapter or "\0" in adapter:
            return None
        # The adapter path is as the user typed it: absolute, or relative to where they ran prefkit eval
        # (most likely here, or the runs directory). Only an exact match with a scanned run counts.
        for base in (Path.cwd(), self.root):
            try:
                candidate = (base / adapter).resolve()
            except (OSError, RuntimeError):
                continue
            if candidate in by_path:
                return by_path[candidate]
        return None

    def evaluation(self, ev: Folder) -> dict[str, Any]:
        """An evaluation: eval.json, eval.md as text, and the first replies of generations.jsonl."""
        report, problem = read_json(self.root, ev.path / EVAL_REPORT)
        markdown, md_problem = read_text(self.root, ev.path / EVAL_MARKDOWN)
        samples = head(self.root, ev.path / EVAL_GENERATIONS, SAMPLE_REPLIES)
        return {
            "id": ev.id,
            "name": ev.name,
            "report": report if isinstance(report, dict) else None,
            "markdown": markdown,
            "samples": samples,
            "problems": [p for p in (problem, md_problem) if p],
        }
