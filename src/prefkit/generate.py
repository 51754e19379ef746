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


@dataclass(frozen=True)
class SamplingSettings:
    """How to decode. Greedy by default; ``do_sample`` with a ``seed`` gives reproducible samples (each
    sequence has its own random generator, so a reply does not depend on what it was batched with)."""

    max_new_tokens: int = 256
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.do_sample and not self.temperature > 0:
            problems.append(f"temperature must be > 0 when sampling, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            problems.append(f"top_k must be >= 0 (0: off), got {self.top_k}")
        if not self.repetition_penalty > 0:
            problems.append(f"repetition_penalty must be > 0 (1: off), got {self.repetition_penalty}")
        if problems:
            raise PrefkitError("; ".join(problems))


def default_settings(model: Any, **overrides: Any) -> SamplingSettings:
    """The model's own decoding defaults (its ``generation_config``: sampling, temperature, top-p,
    top-k, repetition penalty), greedy where it sets none; ``overrides`` that are not None win.

    ``temperature=0`` in the overrides means greedy, as in the OpenAI API."""
    config = getattr(model, "generation_config", None)
    values: dict[str, Any] = {}
    if config is not None and getattr(config, "do_sample", False):
        values["do_sample"] = True
        for name in ("temperature", "top_p", "top_k"):
            if getattr(config, name, None) is not None:
                values[name] = getattr(config, name)
    if config is not None and getattr(config, "repetition_penalty", None) not in (None, 1.0):
        values["repetition_penalty"] = config.repetition_penalty
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "temperature" in overrides and overrides["temperature"] is not None:
        values["do_sample"] = overrides["temperature"] > 0
        if not values["do_sample"]:
            values["temperature"] = 1.0
    return SamplingSettings(**values)


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


def context_length(model: Any) -> int | None:
    """How many tokens (prompt and reply) the model can attend to, from its config; None if unknown."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


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
    from prefkit.engine import Engine, Request

    settings = settings or SamplingSettings()
    stop = stop_condition(model, encoder)
    engine = Engine(model, encoder.tokenizer, max_batch=batch_size)
    seqs = []
    for i, prompt in enumerate(prompts):
        seeded = replace(settings, seed=settings.seed + i) if settings.seed is not None else settings
        request = Request(encoder.prompt_ids(prompt), seeded, stop, max_length=context_length(model))
        seqs.append(engine.sequence(request))
        engine.add(seqs[-1])
    was_training = model.training
    model.eval()
    try:
        while engine.has_work:
            done = sum(update.finished for update in engine.step())
            if done and on_batch is not None:
                on_batch(done)
    finally:
        model.train(was_training)
    return [Reply(seq.text.strip(), seq.finish_reason or "stop", seq.completion_tokens) for seq in seqs]
