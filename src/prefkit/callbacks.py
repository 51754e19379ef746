"""What a run writes as it goes: ``metrics.jsonl`` (every logged record, with its global step) and, at
the end, the loss and reward plots."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

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
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def truncate_metrics(path: Path, last_step: int) -> int:
    """Drop records logged after ``last_step`` (by a run that went on past its last checkpoint and then
    stopped), so a resumed run appends each later step exactly once. Returns how many were dropped."""
    records = read_metrics(path)
    kept = [r for r in records if r.get("step", 0) <= last_step]
    if len(kept) != len(records):
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        tmp.replace(path)
    return len(records) - len(kept)


def plot_run(output_dir: Path, preference: bool) -> list[Path]:
    """``loss.png`` and, for preference stages, ``rewards.png`` from ``metrics.jsonl``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(output_dir / METRICS_FILE)
    written: list[Path] = []

    def series(key: str) -> tuple[list[int], list[float]]:
        points = [(r["step"], r[key]) for r in records if key in r]
        return [p[0] for p in points], [p[1] for p in points]

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("loss", "train"), ("eval_loss", "eval")):
        steps, values = series(key)
        if steps:
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(output_dir / "loss.png", dpi=110)
    plt.close(fig)
    written.append(output_dir / "loss.png")

    if preference:
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        for key in ("rewards/chosen", "rewards/rejected", "rewards/margins"):
            steps, values = series(key)
            if steps:
                left.plot(steps, values, label=key.split("/")[1])
        left.set_title("rewards")
        left.set_xlabel("step")
        left.grid(alpha=0.3)
        left.legend()
        for key, label in (("rewards/accuracies", "train"), ("eval_rewards/accuracies", "eval")):
            steps, values = series(key)
            if steps:
                right.plot(steps, values, label=label)
        right.set_ylim(-0.05, 1.05)
        right.set_title("reward accuracy")
        right.set_xlabel("step")
        right.grid(alpha=0.3)
        right.legend()
        fig.tight_layout()
        fig.savefig(output_dir / "rewards.png", dpi=110)
        plt.close(fig)
        written.append(output_dir / "rewards.png")
    return written
