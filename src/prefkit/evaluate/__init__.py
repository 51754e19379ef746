"""Evaluating a model or a finished run: preference metrics on held-out pairs (with the run's own loss and
reference), its replies -- generated, or read from a file -- scored and guarded by :mod:`prefkit.score`,
beside the run's starting point; an optional pairwise judge; eval.json/eval.md; and the comparison of
runs. Every score that can rise while replies get worse is reported beside one that would show it
(docs/evaluation.md).

May import: train, score, infer, model, data, config."""

from prefkit.evaluate.preference import RewardSettings, preference_metrics
from prefkit.score.generation import generate_samples, score_and_summarise, summarise
from prefkit.score.scorers import (
    BUILTIN,
    DEFAULT_SCORERS,
    Sample,
    ScorerError,
    guides_with_question,
    resolve_scorers,
    score_samples,
)

__all__ = [
    "BUILTIN",
    "DEFAULT_SCORERS",
    "RewardSettings",
    "Sample",
    "ScorerError",
    "generate_samples",
    "guides_with_question",
    "preference_metrics",
    "resolve_scorers",
    "score_and_summarise",
    "score_samples",
    "summarise",
]
