"""How a sweep's runs are ranked: by one held-out metric, with guards that keep a run whose replies are
broken, or got worse than the base model's, from winning.

Every run is evaluated on the same held-out pairs as the model it started from (the *baseline*). A run
fails a guard when its evaluation does (``failed_guards`` in its eval.json: empty, short, looping,
copied, off-topic, wrong-language or duplicate replies over their limits, see
:mod:`prefkit.score.guards`), or when its replies are worse than the baseline's, in any language, on a
score that catches reward hacking -- they stray from the prompt's subject (``relevance``), say the prompt
back (``prompt_copy``) or loop (``repeated_4gram_share``) -- by more than the guard's tolerance. The
ranking puts every run that passes all guards above every run that fails one; within each part, runs are
ordered by the metric (ties: higher relevance first, then the run's name). The *best* run is the top run
that passes its guards: a run that fails one is never best, even when no run passes.

So a setting that wins the metric by gaming it -- preference accuracy or a style score up, replies off
the subject, one frame said to every prompt -- ranks below the runs whose replies held up, whatever its
metric.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prefkit.evaluate.report import GENERATION_ROWS, PREFERENCE_ROWS
from prefkit.score.guards import baseline_failures
from prefkit.score.scorers import BUILTIN
from prefkit.sweep.spec import SweepError

DEFAULT_METRIC = "accuracy"
# Not quality: more words or more varied words are not better replies, so they rank nothing.
NOT_RANKABLE = frozenset(
    {"length_words", "length_tokens", "length_chars", "length_ratio", "distinct_1", "distinct_2"}
)
# The implicit rewards are beta * (policy - reference) log-prob, computed with each run's own loss settings:
# sweeping these makes them differ by construction (a larger beta, a larger margin), not by quality.
REWARD_SETTINGS = frozenset({"pref_loss", "pref_beta", "simpo_gamma", "stage", "adapter_name_or_path"})
LOWER_IS_BETTER = frozenset(
    {
        "prompt_copy",
        "repeated_4gram_share",
        "logps/rejected",
        "logps_per_token/rejected",
        "rewards/rejected",
    }
)


@dataclass(frozen=True)
class Measured:
    """What the ranking reads of one side of an eval.json."""

    metrics: dict[str, float]  # preference and generation metrics, flat
    languages: dict[str, dict[str, float]]  # generation metrics per language
    failed_guards: tuple[str, ...]  # the evaluation's own


@dataclass
class Row:
    """One run on the leaderboard."""

    name: str
    status: str  # evaluated, trained, interrupted, pending, failed
    settings: dict[str, Any]  # every swept key's value for this run
    measured: Measured | None = None  # held-out
    error: str | None = None
    value: float | None = None  # the ranking metric
    rank: int | None = None
    guard_failures: list[str] = field(default_factory=list)

    @property
    def metrics(self) -> dict[str, float] | None:
        return self.measured.metrics if self.measured is not None else None

    @property
    def passed(self) -> bool:
        return self.value is not None and not self.guard_failures


def scorer_metrics(scorers: Sequence[str]) -> set[str]:
    """Metric names the configured scorers report (a user scorer's is its function's name)."""
    return {s if s in BUILTIN else s.rpartition(":")[2] for s in scorers}


def canonical_metric(text: str, scorers: Sequence[str] = ()) -> str:
    """The held-out metric ``text`` names; TRL-style ``eval_`` names (``eval_rewards/accuracies``) are
    read as the held-out metric of the same name. Training metrics (``loss``) are refused: the leaderboard
    ranks by held-out evaluation."""
    known = {*PREFERENCE_ROWS, *GENERATION_ROWS, *scorer_metrics(scorers)} - {"pairs"}
    name = text.strip()
    if name not in known and name.startswith("eval_") and name.removeprefix("eval_") in known:
        name = name.removeprefix("eval_")
    user_scorers = any(s not in BUILTIN for s in scorers)
    if name not in known and not user_scorers:  # a user scorer may return a mapping of any names
        raise SweepError(
            f"--metric {text}: not a held-out metric. The leaderboard ranks by held-out evaluation, not "
            f"by training logs; choose one of {', '.join(sorted(known))} (docs/evaluation.md)"
        )
    if name in NOT_RANKABLE:
        raise SweepError(
            f"--metric {text}: a length or variety figure says nothing of quality (longer is not better); "
            "rank by accuracy, relevance, rouge_l or a scorer"
        )
    return name


def check_metric_for_grid(metric: str, swept_keys: set[str]) -> None:
    """Refuse a reward metric when the grid changes how rewards are computed: runs would differ by the
    setting, not by what they learned."""
    moving = swept_keys & REWARD_SETTINGS
    if metric.startswith("rewards/") and moving:
        raise SweepError(
            f"--metric {metric}: the implicit rewards are computed with each run's own "
            f"{', '.join(sorted(moving))}, so they are not comparable across this grid (a larger beta gives "
            "a larger margin); rank by accuracy or margin (per-token log-probs, the same for every run)"
        )


def check_metric_measured(metric: str, baseline: Mapping[str, float]) -> None:
    """The metric is among what the held-out evaluation measures (a user scorer may name any metric, so
    this is known only once the base model is evaluated): checked before any run trains."""
    if metric not in baseline:
        raise SweepError(
            f"--metric {metric}: the held-out evaluation of the base model gives no such figure; it gives "
            f"{', '.join(sorted(baseline))}"
        )


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


def _numbers(section: Mapping[str, Any] | None) -> dict[str, float]:
    return {
        key: float(value)
        for key, value in (section or {}).items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


def flat_metrics(report: Mapping[str, Any] | None) -> dict[str, float]:
    """An eval.json section (``model`` or ``baseline``) as one {metric: value}, non-finite values left out."""
    if not report:
        return {}
    return {**_numbers(report.get("preference")), **_numbers(report.get("generation"))}


def measured(report: Mapping[str, Any] | None) -> Measured | None:
    """One side (``model`` or ``baseline``) of an eval.json; an evaluation written before prefkit measured
    per language counts as one language, ``all``."""
    if not report:
        return None
    languages = report.get("generation_by_language") or {"all": report.get("generation") or {}}
    return Measured(
        flat_metrics(report),
        {lang: _numbers(figures) for lang, figures in languages.items()},
        tuple(report.get("failed_guards") or ()),
    )


def rank_rows(rows: Sequence[Row], metric: str, baseline: Measured | None) -> list[Row]:
    """Rows ranked as the module docstring says; rows without the metric (not evaluated, failed) follow,
    unranked, in name order."""
    for row in rows:
        row.value = (row.metrics or {}).get(metric)
        row.guard_failures = []
        if row.value is not None and row.measured is not None:
            row.guard_failures = list(row.measured.failed_guards)
            if baseline is not None:
                row.guard_failures += baseline_failures(row.measured.languages, baseline.languages)
    sign = -1.0 if higher_is_better(metric) else 1.0
    scored = sorted(
        (r for r in rows if r.value is not None),
        key=lambda r: (
            bool(r.guard_failures),
            sign * r.value,
            -(r.metrics or {}).get("relevance", 0.0),
            r.name,
        ),
    )
    for position, row in enumerate(scored, start=1):
        row.rank = position
    rest = sorted((r for r in rows if r.value is None), key=lambda r: r.name)
    for row in rest:
        row.rank = None
    return [*scored, *rest]


def best(rows: Sequence[Row]) -> Row | None:
    return next((r for r in rows if r.passed), None)
