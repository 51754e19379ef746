"""Generation from chat prompts: the one place replies are produced (evaluation, the quickstart, chat,
batch generation and the server build on it).

A reply ends at the first of: any end-of-sequence id of the model's ``generation_config``, the
tokenizer's EOS, or the chat template's end-of-turn marker. The marker is a stop id when it is one
token (ChatML's ``<|im_end|>``, Gemma's ``<end_of_turn>``); when it is not (a GPT-2 trained with
``template: chatml``, whose vocabulary has no ``<|im_end|>``), it is a stop string, cut off the reply.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from prefkit.data.examples import Message
from prefkit.data.tokenize import ChatEncoder
from prefkit.errors import PrefkitError
from prefkit.infer.sampling import SamplingSettings
from prefkit.infer.stop import stop_condition
from prefkit.model.loader import context_length


@dataclass(frozen=True)
class Reply:
    text: str  # decoded without special tokens, stripped of surrounding whitespace
    finish_reason: str  # "stop" (the model ended it) or "length" (cut off at max_new_tokens or the context)
    tokens: int  # generated tokens, the stop token included


def generate(
    model: Any, encoder: ChatEncoder, prompts: Sequence[Sequence[Message]], **options: Any
) -> list[str]:
    """The text of :func:`generate_replies`' replies (the same options)."""
    return [reply.text for reply in generate_replies(model, encoder, prompts, **options)]


def generate_replies(
    model: Any,
    encoder: ChatEncoder,
    prompts: Sequence[Sequence[Message]],
    *,
    settings: SamplingSettings | None = None,
    batch_size: int = 8,
    on_batch: Callable[[int], None] | None = None,
) -> list[Reply]:
    """A reply to each prompt, in order. At most ``batch_size`` prompts are decoded together
    (continuously batched: a finished reply's place goes to the next prompt at once); ``on_batch(n)`` is
    called each time ``n`` more prompts are finished. With ``settings.seed``, prompt ``i`` samples with
    seed ``seed + i``."""
    from prefkit.infer.decode import Decoder, Request

    settings = settings or SamplingSettings()
    stop = stop_condition(model, encoder)
    decoder = Decoder(model, encoder.tokenizer, max_batch=batch_size)
    seqs = []
    for i, prompt in enumerate(prompts):
        seeded = replace(settings, seed=settings.seed + i) if settings.seed is not None else settings
        request = Request(encoder.prompt_ids(prompt), seeded, stop, max_length=context_length(model))
        seqs.append(decoder.sequence(request))
        decoder.add(seqs[-1])
    was_training = model.training
    model.eval()
    try:
        while decoder.has_work:
            done = sum(update.finished for update in decoder.step())
            if done and on_batch is not None:
                on_batch(done)
    finally:
        model.train(was_training)
    failed = [i for i, seq in enumerate(seqs) if seq.finish_reason == "error"]
    if failed:  # a reply that could not be sampled (non-finite logits) is no reply to score
        raise PrefkitError(
            f"{len(failed)} of {len(seqs)} replies could not be generated (the first, prompt {failed[0]}: "
            f"{seqs[failed[0]].error})"
        )
    return [Reply(seq.text.strip(), seq.finish_reason or "stop", seq.completion_tokens) for seq in seqs]
