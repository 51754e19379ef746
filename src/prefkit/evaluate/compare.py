"""`prefkit compare`: the A/B view of finished (or unfinished) runs -- one markdown table of their final
and best metrics and of the settings that differ, and overlaid loss, reward-margin and accuracy plots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefkit.errors import PrefkitError
from prefkit.train.run.folder import RUN_FILE, write_text_atomic
from prefkit.train.run.metrics import METRICS_FILE, read_metrics

# Settings that differ between any two runs by nature, not by choice.
IGNORED_SETTINGS = {"output_dir", "overwrite_output_dir", "resume_from_checkpoint", "config_file"}
# (metric, plot title); each plot overlays the runs, train solid and eval dashed.
# Bookkeeping, not results: left out of the table (still in each run's metrics.jsonl).
SKIPPED_METRICS = {
    "learning_rate",
    "grad_norm",
    "total_flos",
    "train_runtime",
    "train_samples_per_second",
    "train_steps_per_second",
    "eval_runtime",
    "eval_samples_per_second",
    "eval_steps_per_second",
}
PLOTS = (("loss", "loss"), ("rewards/margins", "reward margin"), ("rewards/accuracies", "reward accuracy"))


class CompareError(PrefkitError):
    pass


@dataclass
class Run:
    label: str
    path: Path
    config: dict[str, Any]
    records: list[dict[str, Any]]
    status: dict[str, Any]


def load_run(path: Path) -> Run:
    path = Path(path)
    if not path.is_dir():
        raise CompareError(f"{path}: not a run folder")
    records = read_metrics(path / METRICS_FILE)
    if not records:
        raise CompareError(f"{path}: no {METRICS_FILE} (is it a prefkit run folder?)")
    config: dict[str, Any] = {}
    if (path / "training_config.json").is_file():
        config = json.loads((path / "training_config.json").read_text(encoding="utf-8")).get("config", {})
    status = json.loads((path / RUN_FILE).read_text()) if (path / RUN_FILE).is_file() else {}
    return Run(path.name, path, config, records, status)


def _lower_is_better(metric: str) -> bool:
    return metric.endswith("loss") or "rejected" in metric or metric.endswith("repeated_4gram_share")


def final_and_best(records: Sequence[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """{metric: (last value, best value)} for every numeric metric logged; best is the minimum for losses
    (and rejected log-probs), the maximum for the rest."""
    series: dict[str, list[float]] = {}
    for r in records:
        for k, v in r.items():
            if k in ("step", "epoch") or k in SKIPPED_METRICS or "logits/" in k:
                continue
            if isinstance(v, bool) or not isinstance(v, int | float):
                continue
            series.setdefault(k, []).append(float(v))
    return {k: (v[-1], min(v) if _lower_is_better(k) else max(v)) for k, v in series.items()}


def differing_settings(runs: Sequence[Run]) -> dict[str, list[Any]]:
    keys = sorted({k for run in runs for k in run.config} - IGNORED_SETTINGS)
    out = {}
    for key in keys:
        values = [run.config.get(key) for run in runs]
        if any(json.dumps(v, sort_keys=True) != json.dumps(values[0], sort_keys=True) for v in values):
            out[key] = values
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _labels(paths: Sequence[Path]) -> list[str]:
    names = [Path(p).name for p in paths]
    return [n if names.count(n) == 1 else str(p) for n, p in zip(names, paths, strict=True)]


def plot_runs(runs: Sequence[Run], stem: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for metric, title in PLOTS:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        drawn = False
        for i, run in enumerate(runs):
            colour = f"C{i}"
            for key, style, suffix in ((metric, "-", "train"), (f"eval_{metric}", "--", "eval")):
                points = [(r["step"], r[key]) for r in run.records if key in r]
                if points:
                    ax.plot(*zip(*points, strict=True), style, color=colour, label=f"{run.label} ({suffix})")
                    drawn = True
        if drawn:
            ax.set_title(title)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            fig.tight_layout()
            path = stem.with_name(f"{stem.name}_{metric.replace('/', '_')}.png")
            fig.savefig(path, dpi=110)
            written.append(path)
        plt.close(fig)
    return written


def compare_runs(
    run_dirs: Sequence[str | Path], output: str | Path = "compare.md", force: bool = False
) -> str:
    """Write the comparison to ``output`` (markdown) and its plots beside it; return the markdown."""
    if not run_dirs:
        raise CompareError("name at least one run folder")
    output = Path(output)
    if output.exists() and not force:
        raise CompareError(
            f"{output} exists; prefkit will not overwrite it: choose another --output or --force"
        )
    runs = [load_run(Path(p)) for p in run_dirs]
    for run, label in zip(runs, _labels([r.path for r in runs]), strict=True):
        run.label = label
    output.parent.mkdir(parents=True, exist_ok=True)
    plots = plot_runs(runs, output.with_suffix(""))

    labels = [r.label for r in runs]
    head = ["| | " + " | ".join(labels) + " |", "| --- |" + " --- |" * len(runs)]
    lines = ["# prefkit compare", "", *head]
    lines.append("| status | " + " | ".join(r.status.get("status", "unfinished") for r in runs) + " |")
    lines.append("| steps | " + " | ".join(_fmt(r.records[-1].get("step")) for r in runs) + " |")
    lines.append("| train seconds | " + " | ".join(_fmt(r.status.get("train_seconds")) for r in runs) + " |")
    per_run = [final_and_best(r.records) for r in runs]
    metrics = sorted({k for m in per_run for k in m}, key=lambda k: (k.startswith("eval_"), k))
    for metric in metrics:
        cells = [f"{_fmt(m[metric][0])} (best {_fmt(m[metric][1])})" if metric in m else "—" for m in per_run]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    differ = differing_settings(runs)
    lines += ["", "## Settings that differ", ""]
    if differ:
        lines += ["| setting | " + " | ".join(labels) + " |", "| --- |" + " --- |" * len(runs)]
        lines += [f"| {k} | " + " | ".join(_fmt(v) for v in values) + " |" for k, values in differ.items()]
    else:
        lines.append("None: the runs' resolved configs are the same." if len(runs) > 1 else "One run.")
    lines += ["", *(f"![{p.stem}]({p.name})" for p in plots), ""]
    text = "\n".join(lines)
    write_text_atomic(output, text)
    return text
