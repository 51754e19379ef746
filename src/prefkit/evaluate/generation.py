"""Replies to held-out prompts, scored: the generation half of an evaluation, shared by `prefkit eval`,
evaluation during training and the quickstart."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefkit.data.examples import Message, PreferenceExample, SFTExample
from prefkit.data.tokenize import ChatEncoder
from prefkit.evaluate.overlap import corpus_bleu
from prefkit.evaluate.scorers import Sample, Scorer, mean_scores, score_samples
from prefkit.generate import SamplingSettings, generate


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
        replies = generate(
            model, encoder, prompts, settings=settings, batch_size=batch_size, on_batch=bar.update
        )
    tokenizer = encoder.tokenizer
    return [
        Sample(
            prompt=prompt[-1].content,
            reply=reply,
            chosen=chosen,
            rejected=rejected,
            reply_tokens=len(tokenizer(reply, add_special_tokens=False)["input_ids"]),
        )
        for (prompt, chosen, rejected), reply in zip(parts, replies, strict=True)
    ]


def summarise(samples: Sequence[Sample]) -> dict[str, float]:
    """The mean of every per-reply score, except BLEU, which is sacrebleu's corpus BLEU over the replies
    (the standard aggregate; the per-reply values are sentence BLEU)."""
    summary = mean_scores(samples)
    if "bleu" in summary:
        summary["bleu"] = corpus_bleu([s.reply for s in samples], [s.chosen or "" for s in samples])
    return summary


def score_and_summarise(samples: list[Sample], scorers: Sequence[tuple[str, Scorer]]) -> dict[str, float]:
    score_samples(samples, scorers)
    return summarise(samples)
