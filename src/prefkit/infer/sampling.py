"""How to decode (:class:`SamplingSettings`, or a model's own defaults), and choosing each sequence's next
token from the logits of a batch whose rows have their own settings.

Rows decoded greedily with no penalty (the common case) take one batched argmax. Other rows are
processed one by one with transformers' own logits processors (repetition penalty, temperature,
top-k, top-p), so a setting means here exactly what it means in ``model.generate``. A row with a
seed samples from its own ``torch.Generator``: its reply does not depend on which other requests
happened to share its batch.
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


class DecodingSequence(Protocol):
    """What choosing a token needs of a sequence being decoded (:class:`prefkit.infer.decode.Sequence`):
    its request's settings and prompt ids, the tokens generated so far, its own random generator."""

    request: Any
    generated: list[int]
    generator: torch.Generator | None


def _plain_greedy(seq: DecodingSequence) -> bool:
    settings = seq.request.settings
    return not settings.do_sample and settings.repetition_penalty == 1.0


def _row_token(logits: torch.Tensor, seq: DecodingSequence) -> int:
    """The next token of one sequence from its logits row ``[1, vocab]`` (float32)."""
    settings = seq.request.settings
    if settings.repetition_penalty != 1.0:
        history = torch.tensor([seq.request.prompt_ids + seq.generated], device=logits.device)
        logits = RepetitionPenaltyLogitsProcessor(settings.repetition_penalty)(history, logits)
    if not settings.do_sample:
        return int(logits.argmax(dim=-1))
    if settings.temperature != 1.0:
        logits = TemperatureLogitsWarper(settings.temperature)(None, logits)
    if settings.top_k > 0:
        logits = TopKLogitsWarper(settings.top_k)(None, logits)
    if settings.top_p < 1.0:
        logits = TopPLogitsWarper(settings.top_p)(None, logits)
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=seq.generator))


def next_tokens(logits: torch.Tensor, seqs: Sequence[DecodingSequence]) -> list[int]:
    """One token per row of ``logits`` ``[batch, vocab]``, each chosen by its sequence's settings."""
    logits = logits.float()
    greedy = logits.argmax(dim=-1).tolist()
    return [
        greedy[i] if _plain_greedy(seq) else _row_token(logits[i : i + 1], seq) for i, seq in enumerate(seqs)
    ]
