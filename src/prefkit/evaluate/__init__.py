"""Evaluation that cannot be gamed by one score: preference metrics on held-out pairs, the model's own
replies scored by reference overlap (ROUGE-L, BLEU, closer-to-chosen), relevance to the prompt, length and
repetition, style and user scorers, an optional pairwise judge, and the comparison of runs. Every score
that can rise while replies get worse is reported beside one that would show it (see
:data:`prefkit.evaluate.report.GUARDS` and docs/evaluation.md)."""

from prefkit.evaluate.generation import generate_samples, score_and_summarise, summarise
from prefkit.evaluate.preference import RewardSettings, preference_metrics
from prefkit.evaluate.scorers import (
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
