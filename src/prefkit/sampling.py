"""Choosing each sequence's next token from the logits of a batch whose rows have their own settings.

Rows decoded greedily with no penalty (the common case) take one batched argmax. Other rows are
processed one by one with transformers' own logits processors (repetition penalty, temperature,
top-k, top-p), so a setting means here exactly what it means in ``model.generate``. A row with a
seed samples from its own ``torch.Generator``: its reply does not depend on which other requests
happened to share its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

if TYPE_CHECKING:
    from prefkit.engine import Sequence as DecodingSequence


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
