"""The leaderboard of a sweep folder: ``leaderboard.json`` (every run, its settings, held-out metrics, guard
results and rank), ``leaderboard.md`` (the same as a table, the base model first, then the settings that
differ between the runs and the plots) and the plots: the metric against each swept key, and the runs'
training curves overlaid (``prefkit compare``'s plots)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefkit.evaluate.compare import differing_settings, load_run, plot_runs
from prefkit.evaluate.report import format_cell
from prefkit.score.guards import BASELINE_GUARDS
from prefkit.sweep.folder import EVAL_FILE, EVALUATED, SweepState, run_status
from prefkit.sweep.plots import plot_metric_by_key
from prefkit.sweep.ranking import Measured, Row, best, higher_is_better, measured, rank_rows
from prefkit.sweep.spec import BASELINE, SweepSpec
from prefkit.train.run.folder import write_json_atomic, write_text_atomic

LEADERBOARD_MD = "leaderboard.md"
LEADERBOARD_JSON = "leaderboard.json"
CURVES = "curves"  # stem of the overlaid training-curve plots
# Held-out metrics shown beside the ranking metric (those present), then the configured scorers'.
SHOWN = (
    "accuracy",
    "rewards/accuracies",
    "relevance",
    "rouge_l",
    "closer_to_chosen",
    "prompt_copy",
    "repeated_4gram_share",
    "length_words",
)
FAILED = "failed"


@dataclass
class Leaderboard:
    metric: str
    rows: list[Row]
    baseline: Measured | None
    best: Row | None
    markdown: str


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def baseline_measured(sweep_dir: Path) -> Measured | None:
    """The base model's held-out evaluation (None before it is evaluated)."""
    report = _read_json(sweep_dir / BASELINE / EVAL_FILE)
    return measured(report.get("model")) if report else None


def baseline_metrics(sweep_dir: Path) -> dict[str, float]:
    """The base model's held-out figures ({} before it is evaluated)."""
    found = baseline_measured(sweep_dir)
    return found.metrics if found is not None else {}


def _run_settings(spec: SweepSpec, sweep_dir: Path, name: str, keys: Sequence[str]) -> dict[str, Any]:
    """Every swept key's value for this run: what the grid set, else what the run's config resolved to
    (a key swept only in another --grid group)."""
    run = spec.run(name)
    record = _read_json(sweep_dir / name / "training_config.json") or {}
    resolved = record.get("config") or spec.base
    return {k: run.settings[k] if k in run.settings else resolved.get(k) for k in keys}


def swept_keys(spec: SweepSpec) -> list[str]:
    return list(dict.fromkeys(k for run in spec.runs for k in run.settings))


def collect_rows(spec: SweepSpec, sweep_dir: Path) -> list[Row]:
    state = SweepState(sweep_dir)
    keys = swept_keys(spec)
    rows = []
    for run in spec.runs:
        status = run_status(sweep_dir / run.name)
        error = state.error(run.name) if status != EVALUATED else None
        report = _read_json(sweep_dir / run.name / EVAL_FILE) if status == EVALUATED else None
        rows.append(
            Row(
                run.name,
                FAILED if error else status,
                _run_settings(spec, sweep_dir, run.name, keys),
                measured(report.get("model")) if report else None,
                error,
            )
        )
    return rows


def _setting(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else format_cell(value)  # 5e-06, not 0.000


def _cell(text: str, limit: int = 200) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _columns(
    metric: str, scorers: Sequence[str], rows: Sequence[Row], baseline: dict[str, float]
) -> list[str]:
    present = {k for r in rows for k in (r.metrics or {})} | set(baseline)
    extra = [s.rpartition(":")[2] for s in scorers]
    return [m for m in dict.fromkeys([metric, *SHOWN, *extra]) if m in present]


def markdown(spec: SweepSpec, sweep_dir: Path, board: Leaderboard, plots: Sequence[Path]) -> str:
    rows, metric = board.rows, board.metric
    baseline = board.baseline.metrics if board.baseline is not None else None
    keys = swept_keys(spec)
    columns = _columns(metric, spec.evaluation["scorers"], rows, baseline or {})
    counts = {s: sum(r.status == s for r in rows) for s in ("evaluated", "failed")}
    ev = spec.evaluation
    lines = [
        f"# prefkit sweep: {sweep_dir.name}",
        "",
        f"Base config: `{spec.config_file}`"
        + (f" with `{' '.join(spec.overrides)}`" if spec.overrides else "")
        + f". {len(rows)} runs: {counts['evaluated']} evaluated, {counts['failed']} failed, "
        f"{len(rows) - counts['evaluated'] - counts['failed']} not finished.",
        "",
        f"Ranked by held-out **{metric}** ({'higher' if higher_is_better(metric) else 'lower'} is better) "
        f"on `{ev['data']}`"
        + (f" (first {ev['max_samples']} pairs)" if ev["max_samples"] else "")
        + ", every run and the base model on the same pairs and prompts. A run whose evaluation fails a "
        "guard (empty, short, looping, copied, off-topic, wrong-language or duplicate replies over their "
        "limits) or whose replies got worse than the base model's in a language ("
        + "; ".join(f"{g.metric} by more than {g.tolerance:g}: {g.catches}" for g in BASELINE_GUARDS)
        + ") ranks below every run that did not, whatever its metric, and is never best.",
        "",
    ]
    if baseline is None:
        lines += ["**The base model's evaluation is missing, so the runs were not compared with it.**", ""]
    if board.best is not None:
        b = board.best
        relevance = (
            f", relevance {format_cell((b.metrics or {}).get('relevance'))}" if "relevance" in columns else ""
        )
        lines += [
            f"**Best: `{b.name}`** ({metric} {format_cell(b.value)}{relevance}); "
            f"its model: `{sweep_dir / b.name}`.",
            "",
        ]
    elif rows:
        lines += ["**No run has been evaluated and passed the guards (yet).**", ""]
    head = ["rank", "run", *keys, *columns, "guards"]
    lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    if baseline is not None:
        base_cells = ["—" for _ in keys]
        lines.append(
            "| — | base model | "
            + " | ".join([*base_cells, *(format_cell(baseline.get(c)) for c in columns)])
            + " | |"
        )
    for row in rows:
        cells = [format_cell(row.rank), f"`{row.name}`", *(_setting(row.settings.get(k)) for k in keys)]
        cells += [format_cell((row.metrics or {}).get(c)) for c in columns]
        if row.status == FAILED:
            guard = f"failed: {_cell(row.error or '')}"
        elif row.value is None:
            guard = row.status if row.metrics is None else f"no {metric}"
        elif row.guard_failures:
            guard = "✗ " + "; ".join(row.guard_failures)
        else:
            guard = "✓" if baseline is not None else "✓ (own guards; not compared with the base model)"
        lines.append("| " + " | ".join([*cells, guard]) + " |")
    finished = [r.name for r in rows if r.metrics is not None]
    if len(finished) > 1:  # prefkit compare's table, one row per run (a sweep has more runs than settings)
        differ = differing_settings([load_run(sweep_dir / n) for n in finished])
        lines += ["", "## Settings that differ", ""]
        if differ:
            lines += ["| run | " + " | ".join(differ) + " |", "| --- |" + " --- |" * len(differ)]
            for i, name in enumerate(finished):
                lines.append(f"| `{name}` | " + " | ".join(_setting(v[i]) for v in differ.values()) + " |")
        else:
            lines.append("None: the runs' resolved configs are the same.")
    if plots:
        lines += ["", "## Plots", "", *(f"![{p.stem}]({p.name})" for p in plots)]
    lines += [
        "",
        "Each run's replies and scores: `<run>/eval.md`, `<run>/generations.jsonl`; the base model's in "
        "`baseline/`.",
        "",
    ]
    return "\n".join(lines)


def _row_json(row: Row) -> dict[str, Any]:
    return {
        "rank": row.rank,
        "run": row.name,
        "status": row.status,
        "settings": row.settings,
        "value": row.value,
        "passed_guards": row.passed,
        "guard_failures": row.guard_failures,
        "metrics": row.metrics,
        "error": row.error,
    }


def write_leaderboard(spec: SweepSpec, sweep_dir: Path, *, plots: bool = True) -> Leaderboard:
    """Rank the sweep folder's runs and write the leaderboard; ``plots`` False (while the sweep runs, after
    each job) leaves the plots for the end."""
    metric = spec.metric
    baseline = baseline_measured(sweep_dir)
    rows = rank_rows(collect_rows(spec, sweep_dir), metric, baseline)
    board = Leaderboard(metric, rows, baseline, best(rows), "")
    written: list[Path] = []
    if plots:
        base_value = baseline.metrics.get(metric) if baseline is not None else None
        written = plot_metric_by_key(rows, swept_keys(spec), metric, base_value, sweep_dir)
        finished = [load_run(sweep_dir / r.name) for r in rows if r.metrics is not None]
        if finished:
            written += plot_runs(finished, sweep_dir / CURVES)
    board.markdown = markdown(spec, sweep_dir, board, written)
    write_text_atomic(sweep_dir / LEADERBOARD_MD, board.markdown)
    write_json_atomic(
        sweep_dir / LEADERBOARD_JSON,
        {
            "metric": metric,
            "higher_is_better": higher_is_better(metric),
            "evaluation": spec.evaluation,
            "guards": [
                {"metric": g.metric, "tolerance": g.tolerance, "higher_is_better": g.higher_is_better}
                for g in BASELINE_GUARDS
            ],
            "baseline": baseline.metrics if baseline is not None else None,
            "baseline_failed_guards": list(baseline.failed_guards) if baseline is not None else None,
            "best": board.best.name if board.best else None,
            "rows": [_row_json(r) for r in rows],
        },
    )
    return board
