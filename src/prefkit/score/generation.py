"""Replies to held-out prompts, scored: the generation half of an evaluation, shared by `prefkit eval`,
evaluation during training and the quickstart."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from prefkit.data.examples import Message, PreferenceExample, SFTExample
from prefkit.data.tokenize import ChatEncoder
from prefkit.infer.generate import generate_replies
from prefkit.infer.sampling import SamplingSettings
from prefkit.score.guards import (
    GuardResult,
    check_guards,
    distinct_across,
    failed_guards,
    flag_samples,
    group_by_language,
)
from prefkit.score.overlap import corpus_bleu
from prefkit.score.scorers import Sample, Scorer, mean_scores, score_samples


def prompt_and_references(
    example: PreferenceExample | SFTExample,
) -> tuple[tuple[Message, ...], str, str | None]:
    """(prompt messages, chosen reply, rejected reply or None): for an SFT conversation, everything before
    its last assistant turn is the prompt and that turn the reference."""
    if isinstance(example, PreferenceExample):
        return example.prompt, example.chosen, example.rejected
    *prompt, last = example.messages
    return tuple(prompt), last.content, None


def generate_samples(
    model: Any,
    encoder: ChatEncoder,
    examples: Sequence[PreferenceExample | SFTExample],
    *,
    settings: SamplingSettings,
    batch_size: int = 8,
    progress: str | None = None,
) -> list[Sample]:
    """One reply per example's prompt, as unscored samples. ``progress`` names a progress bar (tqdm, on
    stderr) shown while generating; None shows none."""
    from tqdm.auto import tqdm

    parts = [prompt_and_references(e) for e in examples]
    prompts = [prompt for prompt, _, _ in parts]
    with tqdm(total=len(prompts), desc=progress, disable=progress is None, unit="reply") as bar:
        replies = generate_replies(
            model, encoder, prompts, settings=settings, batch_size=batch_size, on_batch=bar.update
        )
    tokenizer = encoder.tokenizer
    return [
        Sample(
            prompt=prompt[-1].content,
            reply=reply.text,
            chosen=chosen,
            rejected=rejected,
            reply_tokens=len(tokenizer(reply.text, add_special_tokens=False)["input_ids"]),
            truncated=reply.finish_reason == "length",
        )
        for (prompt, chosen, rejected), reply in zip(parts, replies, strict=True)
    ]


def summarise(samples: Sequence[Sample]) -> dict[str, float]:
    """The mean of every per-reply score, except BLEU, which is sacreBLEU's corpus BLEU over the replies
    (the standard aggregate; the per-reply values are sentence BLEU)."""
    summary = mean_scores(samples)
    if "bleu" in summary:
        summary["bleu"] = corpus_bleu([s.reply for s in samples], [s.chosen or "" for s in samples])
    return summary


@dataclass
class ScoredReplies:
    """A set of scored and flagged replies: the means over all of them and per language, and the guards
    (:mod:`prefkit.score.guards`)."""

    samples: list[Sample]
    summary: dict[str, float]  # over every reply
    by_language: dict[str, dict[str, float]]  # the same per language, with the set-level figures
    guards: list[GuardResult]

    @property
    def failed_guards(self) -> list[str]:
        return failed_guards(self.guards)

    def to_json(self) -> dict[str, Any]:
        return {
            "generation": self.summary,
            "generation_by_language": self.by_language,
            "guards": [{**asdict(g), "failed": g.failed} for g in self.guards],
            "failed_guards": self.failed_guards,
        }


def score_replies(
    samples: list[Sample],
    scorers: Sequence[tuple[str, Scorer]],
    guard_limits: Mapping[str, float] | None = None,
) -> ScoredReplies:
    """Score every sample, flag it, and summarise: overall, per language (with the replies' and the
    chosen replies' distinct bigrams across the set), and the guards."""
    score_samples(samples, scorers)
    flag_samples(samples)
    by_language = {}
    for lang, group in group_by_language(samples).items():
        row = summarise(group)
        row["replies"] = float(len(group))
        row["distinct_2_across"] = distinct_across([s.reply for s in group])
        if all(s.chosen for s in group):
            row["chosen_distinct_2_across"] = distinct_across([s.chosen or "" for s in group])
        by_language[lang] = row
    return ScoredReplies(samples, summarise(samples), by_language, check_guards(samples, guard_limits))


def score_and_summarise(samples: list[Sample], scorers: Sequence[tuple[str, Scorer]]) -> dict[str, float]:
    """The means of :func:`score_replies`, with the number of failed guards as ``failed_guards``."""
    scored = score_replies(samples, scorers)
    return {**scored.summary, "failed_guards": float(len(scored.failed_guards))}
