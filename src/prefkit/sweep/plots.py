"""The sweep's own plot: the ranking metric against each swept key, one file per key. (Training curves of
the runs, overlaid, come from ``prefkit compare``'s plotting.)"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefkit.sweep.ranking import Row


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def plot_metric_by_key(
    rows: Sequence[Row], keys: Sequence[str], metric: str, baseline: float | None, folder: Path
) -> list[Path]:
    """``plot_<key>.png`` per swept key: each evaluated run's metric at its value of the key (circles for
    runs that pass the guards, crosses for those that fail one), the base model's as a dashed line. A
    numeric key spanning a decade or more (a learning rate) gets a log axis; any other non-numeric key
    a categorical one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in rows if r.value is not None]
    written = []
    for key in keys:
        values = [r.settings.get(key) for r in scored]
        if not scored:
            break
        numbers = [_number(v) for v in values]
        numeric = all(n is not None for n in numbers)
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        if numeric:
            xs = [float(n) for n in numbers if n is not None]
            positive = [x for x in xs if x > 0]
            if len(positive) == len(xs) and max(xs) / min(xs) >= 10:
                ax.set_xscale("log")
        else:
            labels = list(dict.fromkeys(str(v) for v in values))
            xs = [float(labels.index(str(v))) for v in values]
            ax.set_xticks(range(len(labels)), labels)
        for passed, marker, label in ((True, "o", "passes the guards"), (False, "x", "fails a guard")):
            points = [(x, r.value) for x, r in zip(xs, scored, strict=True) if r.passed == passed]
            if points:
                ax.scatter(*zip(*points, strict=True), marker=marker, s=45, label=label)
        if baseline is not None:
            ax.axhline(baseline, linestyle="--", color="grey", label="base model")
        ax.set_xlabel(key)
        ax.set_ylabel(f"held-out {metric}")
        ax.set_title(f"{metric} by {key}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = folder / f"plot_{_file_part(key)}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _file_part(key: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in key)
