"""How to decode (:class:`SamplingSettings`, or a model's own defaults), and choosing each sequence's next
token from the logits of a batch whose rows have their own settings.

Rows decoded greedily with no penalty (the common case) take one batched argmax. Other rows are
processed one by one with transformers' own logits processors (repetition penalty, temperature,
top-k, top-p), so a setting means here exactly what it means in ``model.generate``. A row with a
seed samples from its own ``torch.Generator``: its reply does not depend on which other requests
happened to share its batch.

One request must never be able to break another's reply, so the settings are bounded where they are
made (:class:`SamplingSettings` refuses what could overflow: a repetition penalty outside
``[MIN_REPETITION_PENALTY, MAX_REPETITION_PENALTY]``, a seed ``torch.Generator.manual_seed`` cannot
take; a temperature below ``MIN_TEMPERATURE`` means greedy, as in vLLM), and a row whose logits or
probabilities still come out non-finite gets a :class:`RowFailure` in place of its token: the decoder
ends that sequence alone, its batch neighbours go on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from prefkit.errors import PrefkitError

# Below this a temperature divides the logits into overflow (softmax of inf is NaN): it means greedy,
# as vLLM takes any temperature under 1e-5.
MIN_TEMPERATURE = 1e-5
# The penalty divides (or multiplies) a logit: 0.01 and 10 keep any real logit far from float32's
# overflow even with MIN_TEMPERATURE, and are well beyond the 1.0-1.5 anyone uses.
MIN_REPETITION_PENALTY = 0.01
MAX_REPETITION_PENALTY = 10.0
# What torch.Generator.manual_seed takes (a 64-bit integer, signed or unsigned); beyond it overflows.
MIN_SEED = -(2**63)
MAX_SEED = 2**64 - 1


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
        if self.do_sample and not self.temperature >= MIN_TEMPERATURE:
            problems.append(
                f"temperature must be at least {MIN_TEMPERATURE:g} when sampling (below is greedy: "
                f"do_sample=False), got {self.temperature}"
            )
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            problems.append(f"top_k must be >= 0 (0: off), got {self.top_k}")
        if not MIN_REPETITION_PENALTY <= self.repetition_penalty <= MAX_REPETITION_PENALTY:
            problems.append(
                f"repetition_penalty must be in [{MIN_REPETITION_PENALTY:g}, {MAX_REPETITION_PENALTY:g}] "
                f"(1: off), got {self.repetition_penalty}"
            )
        if self.seed is not None and not MIN_SEED <= self.seed <= MAX_SEED:
            problems.append(f"seed must be in [-2**63, 2**64 - 1] (64 bits), got {self.seed}")
        if problems:
            raise PrefkitError("; ".join(problems))


def default_settings(model: Any, **overrides: Any) -> SamplingSettings:
    """The model's own decoding defaults (its ``generation_config``: sampling, temperature, top-p,
    top-k, repetition penalty), greedy where it sets none; ``overrides`` that are not None win.

    A temperature below ``MIN_TEMPERATURE`` (``temperature=0`` in the overrides, as in the OpenAI API, or
    a tiny one in the model's config) means greedy."""
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
    if overrides.get("temperature") is not None:
        values["do_sample"] = True
    if values.get("do_sample") and values.get("temperature", 1.0) < MIN_TEMPERATURE:
        values["do_sample"] = False
    if not values.get("do_sample") and "temperature" in values:
        values["temperature"] = 1.0  # unused when greedy; a tiny one would only be refused
    return SamplingSettings(**values)


class DecodingSequence(Protocol):
    """What choosing a token needs of a sequence being decoded (:class:`prefkit.infer.decode.Sequence`):
    its request's settings and prompt ids, the tokens generated so far, its own random generator."""

    request: Any
    generated: list[int]
    generator: torch.Generator | None


def _plain_greedy(seq: DecodingSequence) -> bool:
    settings = seq.request.settings
    return not settings.do_sample and settings.repetition_penalty == 1.0


@dataclass(frozen=True)
class RowFailure:
    """In place of a token: why this row's next token could not be chosen (its sequence ends with it)."""

    reason: str


class _Unsampleable(Exception):
    pass


def _row_token(logits: torch.Tensor, seq: DecodingSequence) -> int:
    """The next token of one sequence from its logits row ``[1, vocab]`` (float32)."""
    settings = seq.request.settings
    if settings.repetition_penalty != 1.0:
        history = torch.tensor([seq.request.prompt_ids + seq.generated], device=logits.device)
        logits = RepetitionPenaltyLogitsProcessor(settings.repetition_penalty)(history, logits)
    if not settings.do_sample:
        if torch.isnan(logits).any():
            raise _Unsampleable("the logits hold NaN")
        return int(logits.argmax(dim=-1))
    if settings.temperature != 1.0:
        logits = TemperatureLogitsWarper(settings.temperature)(None, logits)
    if settings.top_k > 0:
        logits = TopKLogitsWarper(settings.top_k)(None, logits)
    if settings.top_p < 1.0:
        logits = TopPLogitsWarper(settings.top_p)(None, logits)
    probs = torch.softmax(logits, dim=-1)
    # multinomial would raise on these -- and a raise here used to fail the whole batch.
    if not float(probs.sum()) > 0:  # NaN anywhere makes the sum NaN; softmax never gives inf
        raise _Unsampleable("the sampling probabilities are not finite")
    return int(torch.multinomial(probs, 1, generator=seq.generator))


def next_tokens(logits: torch.Tensor, seqs: Sequence[DecodingSequence]) -> list[int | RowFailure]:
    """One token per row of ``logits`` ``[batch, vocab]``, each chosen by its sequence's settings; a
    :class:`RowFailure` for a row whose token cannot be chosen (non-finite logits or probabilities),
    so that only its own sequence ends."""
    logits = logits.float()
    # One pass gives both: a row's max is NaN exactly when the row holds a NaN (max propagates it).
    peaks, indices = logits.max(dim=-1)
    greedy, nan_rows = indices.tolist(), torch.isnan(peaks).tolist()
    out: list[int | RowFailure] = []
    for i, seq in enumerate(seqs):
        if _plain_greedy(seq):
            out.append(RowFailure("the logits hold NaN") if nan_rows[i] else greedy[i])
            continue
        try:
            out.append(_row_token(logits[i : i + 1], seq))
        except _Unsampleable as err:
            out.append(RowFailure(str(err)))
    return out
