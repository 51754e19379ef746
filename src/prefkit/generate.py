"""Generation from chat prompts: the one place replies are produced (evaluation, the quickstart, chat,
batch generation and the server build on it).

A reply ends at the first of: any end-of-sequence id of the model's ``generation_config``, the
tokenizer's EOS, or the chat template's end-of-turn marker. The marker is a stop id when it is one
token (ChatML's ``<|im_end|>``, Gemma's ``<end_of_turn>``); when it is not (a GPT-2 trained with
``template: chatml``, whose vocabulary has no ``<|im_end|>``), it is a stop string, cut off the reply.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from prefkit.data.examples import Message
from prefkit.data.tokenize import ChatEncoder


@dataclass(frozen=True)
class SamplingSettings:
    """How to decode. Greedy by default; ``do_sample`` with a ``seed`` gives reproducible samples."""

    max_new_tokens: int = 256
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None

    def generate_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample}
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        else:  # a model's generation_config may carry sampling values that greedy decoding would warn about
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if self.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = self.repetition_penalty
        return kwargs


@dataclass(frozen=True)
class StopCondition:
    ids: tuple[int, ...]  # token ids that end a reply
    strings: tuple[str, ...]  # texts that end a reply where no single token does


def _as_list(value: int | Sequence[int] | None) -> list[int]:
    if value is None:
        return []
    return [int(value)] if isinstance(value, int) else [int(v) for v in value]


def stop_condition(model: Any, encoder: ChatEncoder) -> StopCondition:
    """The union of the model's and the tokenizer's end-of-sequence ids and the template's end of turn."""
    tokenizer = encoder.tokenizer
    generation_config = getattr(model, "generation_config", None)
    ids = _as_list(getattr(generation_config, "eos_token_id", None)) + _as_list(tokenizer.eos_token_id)
    strings: list[str] = []
    marker = encoder.end_of_turn
    if marker:
        marker_ids = tokenizer(marker, add_special_tokens=False)["input_ids"]
        if len(marker_ids) == 1:
            ids += marker_ids
        else:
            strings.append(marker)
    return StopCondition(tuple(dict.fromkeys(ids)), tuple(strings))


def decode_reply(tokenizer: Any, ids: Sequence[int], stop: StopCondition) -> str:
    """The reply text of generated ``ids``: up to the first stop id or stop string, special tokens
    (padding after the end, a BOS) dropped."""
    end = next((i for i, token in enumerate(ids) if token in stop.ids), len(ids))
    text = tokenizer.decode(ids[:end], skip_special_tokens=True)
    for marker in stop.strings:
        at = text.find(marker)
        if at >= 0:
            text = text[:at]
    return text.strip()


@torch.no_grad()
def generate(
    model: Any,
    encoder: ChatEncoder,
    prompts: Sequence[Sequence[Message]],
    *,
    settings: SamplingSettings | None = None,
    batch_size: int = 8,
    on_batch: Callable[[int], None] | None = None,
) -> list[str]:
    """A reply to each prompt, decoded without special tokens. Prompts are left-padded into batches of
    ``batch_size``; ``on_batch(n)`` is called after each batch with the number of prompts it finished."""
    settings = settings or SamplingSettings()
    tokenizer = encoder.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stop = stop_condition(model, encoder)
    device = next(model.parameters()).device
    if settings.seed is not None:
        torch.manual_seed(settings.seed)
    was_training = model.training
    model.eval()
    replies: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            rows = [encoder.prompt_ids(p) for p in prompts[start : start + batch_size]]
            width = max(len(r) for r in rows)
            input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
            attention_mask = torch.tensor(
                [[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device
            )
            output = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                pad_token_id=pad,
                eos_token_id=list(stop.ids),
                stop_strings=list(stop.strings) or None,
                tokenizer=tokenizer if stop.strings else None,
                **settings.generate_kwargs(),
            )
            replies += [decode_reply(tokenizer, row.tolist(), stop) for row in output[:, width:]]
            if on_batch is not None:
                on_batch(len(rows))
    finally:
        model.train(was_training)
    return replies
