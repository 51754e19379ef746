"""What a run writes as it goes: ``metrics.jsonl`` (every logged record, with its global step) and, at
the end, the loss and reward plots."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from prefkit.train.run.folder import write_text_atomic

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


class MetricsJsonl(TrainerCallback):
    """Appends each logged record to ``output_dir/metrics.jsonl`` as ``{"step": N, ...}``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, **{k: v for k, v in logs.items() if k != "total_flos"}}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl``. A line that does not parse -- the last record of a process
    killed mid-write -- is left out with a warning rather than failing the run that reads it."""
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            logger.warning("%s:%d: not a complete record (a write cut short?); left out", path, number)
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def truncate_metrics(path: Path, last_step: int) -> int:
    """Drop records logged after ``last_step`` (by a run that went on past its last checkpoint and then
    stopped), and the end-of-training summary, so a resumed run appends each later step exactly once.
    Returns how many were dropped."""
    records = read_metrics(path)
    kept = [r for r in records if r.get("step", 0) <= last_step and "train_runtime" not in r]
    text = "".join(json.dumps(r) + "\n" for r in kept)
    if not path.exists() or text != path.read_text(encoding="utf-8", errors="replace"):
        write_text_atomic(path, text)
    return len(records) - len(kept)


def plot_names(preference: bool) -> list[str]:
    """The files :func:`plot_run` writes."""
    return ["loss.png", "rewards.png"] if preference else ["loss.png"]


def _panel(ax: Any, records: list[dict[str, Any]], lines: list[tuple[str, str]], title: str) -> None:
    """One chart: each (metric key, label) that was logged, against the step."""
    for key, label in lines:
        points = [(r["step"], r[key]) for r in records if key in r]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o" if len(points) < 30 else None, label=label)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend()


def plot_run(output_dir: Path, preference: bool) -> list[Path]:
    """``loss.png`` and, for preference stages, ``rewards.png`` from ``metrics.jsonl``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(output_dir / METRICS_FILE)
    charts: list[tuple[str, list[tuple[list[tuple[str, str]], str]]]] = [
        ("loss.png", [([("loss", "train"), ("eval_loss", "eval")], "loss")]),
    ]
    if preference:
        rewards = [(f"rewards/{k}", k) for k in ("chosen", "rejected", "margins")]
        accuracy = [("rewards/accuracies", "train"), ("eval_rewards/accuracies", "eval")]
        charts.append(("rewards.png", [(rewards, "rewards"), (accuracy, "reward accuracy")]))
    written = []
    for name, panels in charts:
        fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels) + 1.5, 4), squeeze=False)
        for ax, (lines, title) in zip(axes[0], panels, strict=True):
            _panel(ax, records, lines, title)
        fig.tight_layout()
        fig.savefig(output_dir / name, dpi=110)
        plt.close(fig)
        written.append(output_dir / name)
    return written
