"""Scorers: what a generated reply is worth, per reply, and the mean over replies.

A scorer takes every :class:`Sample` of an evaluation (some, like relevance, need the whole set) and
returns one ``{metric: value}`` per sample. The builtin ones are listed in :data:`BUILTIN`; the general
ones (:data:`DEFAULT_SCORERS`) always run, a style scorer runs where it is named (``--scorer socratic``,
``eval_scorers: [socratic]``), and a user scorer is named as ``module:function`` or
``path/to/file.py:function``: a function of one :class:`Sample` returning a number (or a bool), or a
mapping of metric names to numbers. User scorers run after the builtin ones and see their values in
``sample.scores``, so a combined score can weigh style against relevance.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefkit.errors import PrefkitError
from prefkit.score.overlap import closer_to_chosen, rouge_l, sentence_bleu
from prefkit.score.relevance import relevance_scores
from prefkit.score.text import copied_share, distinct, repeated_share, words


class ScorerError(PrefkitError):
    """A scorer that cannot be found, loaded or run."""


@dataclass
class Sample:
    """One generated reply and what it is judged against."""

    prompt: str  # the last user message
    reply: str
    chosen: str | None = None
    rejected: str | None = None
    reply_tokens: int | None = None  # in the model's tokenizer, where known
    truncated: bool = False  # cut off at the token limit rather than ended by the model
    scores: dict[str, float] = field(default_factory=dict)  # filled in by the scorers, in order
    flags: list[str] = field(default_factory=list)  # what is wrong with it (prefkit.score.guards)


Scorer = Callable[[Sequence[Sample]], list[dict[str, float]]]


# -- style ----------------------------------------------------------------------------------------
# A question mark, then optionally closing quotes/brackets, at the very end of the reply.
_ENDS_WITH_QUESTION = re.compile(r"[?？][\"'”』」)）\]]*\s*$")


def guides_with_question(reply: str) -> bool:
    """The Socratic tutor's move (the bundled tutor data's style): the reply ends with a question for the
    learner. It says nothing about what the question is about: pair it with relevance."""
    return bool(_ENDS_WITH_QUESTION.search(reply))


def socratic(samples: Sequence[Sample]) -> list[dict[str, float]]:
    return [{"socratic": float(guides_with_question(s.reply))} for s in samples]


# -- overlap with the references ------------------------------------------------------------------
def _needs_references(samples: Sequence[Sample], name: str) -> None:
    if any(s.chosen is None for s in samples):
        raise ScorerError(f"scorer '{name}' needs a chosen reply for every prompt (preference pairs)")


def rouge(samples: Sequence[Sample]) -> list[dict[str, float]]:
    _needs_references(samples, "rouge_l")
    return [{"rouge_l": rouge_l(s.reply, s.chosen or "")} for s in samples]


def bleu(samples: Sequence[Sample]) -> list[dict[str, float]]:
    _needs_references(samples, "bleu")
    return [{"bleu": sentence_bleu(s.reply, s.chosen or "")} for s in samples]


def closer(samples: Sequence[Sample]) -> list[dict[str, float]]:
    _needs_references(samples, "closer_to_chosen")
    return [
        {"closer_to_chosen": closer_to_chosen(s.reply, s.chosen or "", s.rejected or "")}
        if s.rejected is not None
        else {}
        for s in samples
    ]


def relevance(samples: Sequence[Sample]) -> list[dict[str, float]]:
    values = relevance_scores(
        [s.reply for s in samples], [s.prompt for s in samples], [s.chosen for s in samples]
    )
    return [
        {"relevance": v.f1, "relevance_precision": v.precision, "relevance_coverage": v.coverage}
        for v in values
    ]


# -- length and repetition ------------------------------------------------------------------------
def length(samples: Sequence[Sample]) -> list[dict[str, float]]:
    out = []
    for s in samples:
        said = len(words(s.reply))
        row = {"length_chars": float(len(s.reply)), "length_words": float(said)}
        if s.chosen:  # the length guard's figure: the reply's length against the reference's
            row["length_ratio"] = said / max(len(words(s.chosen)), 1)
        if s.reply_tokens is not None:
            row["length_tokens"] = float(s.reply_tokens)
        out.append(row)
    return out


def repetition(samples: Sequence[Sample]) -> list[dict[str, float]]:
    out = []
    for s in samples:
        tokens = words(s.reply)
        out.append(
            {
                "distinct_1": distinct(tokens, 1),
                "distinct_2": distinct(tokens, 2),
                "repeated_4gram_share": repeated_share(tokens, 4),
            }
        )
    return out


def prompt_copy(samples: Sequence[Sample]) -> list[dict[str, float]]:
    """How much of the reply is the prompt said back (word trigrams): relevance's guard against echoes."""
    return [{"prompt_copy": copied_share(words(s.reply), words(s.prompt))} for s in samples]


# name -> scorer. The general ones run by default; style scorers where named.
BUILTIN: dict[str, Scorer] = {
    "rouge_l": rouge,
    "bleu": bleu,
    "relevance": relevance,
    "closer_to_chosen": closer,
    "length": length,
    "repetition": repetition,
    "prompt_copy": prompt_copy,
    "socratic": socratic,
}
DEFAULT_SCORERS = ("rouge_l", "bleu", "relevance", "closer_to_chosen", "length", "repetition", "prompt_copy")
REFERENCE_SCORERS = ("rouge_l", "bleu", "closer_to_chosen")  # need a chosen reply


# -- user scorers ---------------------------------------------------------------------------------
def _import_target(spec: str) -> Any:
    """``module:function`` (an importable module) or ``path/to/file.py:function``."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ScorerError(
            f"scorer '{spec}': expected a builtin name ({', '.join(BUILTIN)}) or module:function "
            "or path/to/file.py:function"
        )
    if module_name.endswith(".py"):
        path = Path(module_name).expanduser()
        if not path.is_file():
            raise ScorerError(f"scorer '{spec}': no such file {path}")
        name = f"prefkit_user_scorer_{abs(hash(str(path.resolve())))}"
        loader_spec = importlib.util.spec_from_file_location(name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise ScorerError(f"scorer '{spec}': cannot load {path} as a Python module")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as err:
            raise ScorerError(f"scorer '{spec}': importing {path} failed: {err!r}") from err
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ScorerError(f"scorer '{spec}': cannot import module '{module_name}': {err}") from err
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ScorerError(f"scorer '{spec}': '{module_name}' has no function '{attr}'")
    return fn


def _as_metrics(name: str, value: Any, spec: str) -> dict[str, float]:
    items = value.items() if isinstance(value, Mapping) else [(name, value)]
    out = {}
    for key, v in items:
        if isinstance(v, bool | int | float):
            out[str(key)] = float(v)
        else:
            raise ScorerError(f"scorer '{spec}' returned {key}={v!r}: expected a number or a bool")
    return out


def user_scorer(spec: str) -> tuple[str, Scorer]:
    """(metric name, scorer) for a ``module:function`` spec: the function scores one Sample."""
    fn = _import_target(spec)
    if len(inspect.signature(fn).parameters) < 1:
        raise ScorerError(f"scorer '{spec}': the function must take one argument (a Sample)")
    name = fn.__name__

    def run(samples: Sequence[Sample]) -> list[dict[str, float]]:
        out = []
        for s in samples:
            try:
                value = fn(s)
            except Exception as err:
                raise ScorerError(f"scorer '{spec}' failed on the reply {s.reply[:60]!r}: {err!r}") from err
            out.append(_as_metrics(name, value, spec))
        return out

    return name, run


def resolve_scorers(names: Sequence[str] = (), *, references: bool = True) -> list[tuple[str, Scorer]]:
    """The default scorers, then each named builtin or user scorer once, in order."""
    chosen = [n for n in DEFAULT_SCORERS if references or n not in REFERENCE_SCORERS]
    resolved: list[tuple[str, Scorer]] = []
    for name in dict.fromkeys([*chosen, *names]):
        if name in BUILTIN:
            resolved.append((name, BUILTIN[name]))
        elif ":" in name:
            resolved.append(user_scorer(name))
        else:
            raise ScorerError(
                f"unknown scorer '{name}': expected one of {', '.join(BUILTIN)} or module:function"
            )
    return resolved


def score_samples(samples: Sequence[Sample], scorers: Sequence[tuple[str, Scorer]]) -> None:
    """Run every scorer, in order, filling each sample's ``scores``."""
    for _, scorer in scorers:
        for sample, row in zip(samples, scorer(samples), strict=True):
            sample.scores.update(row)


def mean_scores(samples: Sequence[Sample]) -> dict[str, float]:
    """The mean of each metric over the samples that have it."""
    totals: dict[str, list[float]] = {}
    for s in samples:
        for k, v in s.scores.items():
            totals.setdefault(k, []).append(v)
    return {k: sum(v) / len(v) for k, v in totals.items()}
