"""Per-token and per-sequence log-probabilities of labelled tokens, for the trainer and for evaluation.

The log-softmax is taken over the vocabulary in chunks of token positions, in float32 (float64 stays
float64), and only at the positions that carry a label: the full ``(rows, positions, vocab)`` float32
log-softmax is never built. With a 150k-token vocabulary (Qwen2, Gemma) it would be the largest tensor of a
training step. The backward pass recomputes each chunk's softmax from the logits and the saved
log-normaliser, so what autograd holds is the logits once plus one float per labelled token.

The logits are taken as the model returns them, without a copy: the labels are shifted onto the logits'
positions, never the logits onto the labels' (a slice of the logits would be copied whole by the reshape
below). Under accelerate's mixed precision (``bf16``/``fp16`` in the Trainer) the model's outputs already
arrive as float32 -- accelerate converts every output of a prepared model's forward -- so there the saved
logits are float32; called on a plain bf16 model (evaluation) they stay bf16.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable

from prefkit.data.tokenize import IGNORE_INDEX

# Elements of one float32 chunk (positions x vocabulary): 2**24 floats is 64 MiB, a chunk of about 340
# positions at a 49k vocabulary and 110 at Qwen2's 152k.
CHUNK_ELEMENTS = 2**24


def _accumulate(logits: torch.Tensor) -> torch.dtype:
    """float32 for half-precision logits (the log-normaliser needs it), float64 kept as it is."""
    return torch.promote_types(logits.dtype, torch.float32)


def _chunk_rows(vocab: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(vocab, 1))


class _LabelLogps(torch.autograd.Function):
    """log softmax(logits)[target] at the given flat positions, computed and differentiated in chunks."""

    @staticmethod
    def forward(
        ctx: Any, logits: torch.Tensor, positions: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        out = torch.empty(positions.shape[0], dtype=_accumulate(logits), device=logits.device)
        lse = torch.empty_like(out)
        step = _chunk_rows(logits.shape[-1])
        for start in range(0, len(positions), step):
            rows = slice(start, start + step)
            x = logits.index_select(0, positions[rows]).to(_accumulate(logits))
            lse[rows] = torch.logsumexp(x, dim=-1)
            out[rows] = x.gather(-1, targets[rows].unsqueeze(-1)).squeeze(-1) - lse[rows]
        ctx.save_for_backward(logits, positions, targets, lse)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        logits, positions, targets, lse = ctx.saved_tensors
        grad = torch.zeros_like(logits)
        step = _chunk_rows(logits.shape[-1])
        for start in range(0, len(positions), step):
            rows = slice(start, start + step)
            x = logits.index_select(0, positions[rows]).to(_accumulate(logits))
            g = torch.exp(x - lse[rows].unsqueeze(-1)).mul_(-grad_out[rows].unsqueeze(-1))
            g.scatter_add_(-1, targets[rows].unsqueeze(-1), grad_out[rows].unsqueeze(-1))
            grad.index_copy_(0, positions[rows], g.to(logits.dtype))
        return grad, None, None


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p(label) at every position, 0 where the label is IGNORE_INDEX; the mask of labelled
    positions)`` for ``logits`` of shape ``(B, T, V)`` already aligned with ``labels`` ``(B, T)``.
    Contiguous logits are read in place; others are copied once by the reshape."""
    mask = labels != IGNORE_INDEX
    flat = logits.reshape(-1, logits.shape[-1])
    positions = mask.reshape(-1).nonzero().squeeze(-1)
    values = _LabelLogps.apply(flat, positions, labels.reshape(-1)[positions])
    out = torch.zeros(mask.numel(), dtype=values.dtype, device=logits.device)
    out = out.index_put((positions,), values)
    return out.view(mask.shape), mask


@torch.no_grad()
def _mean_logit_sums(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per row, the sum over labelled positions of the mean logit (TRL's ``logits/*`` metric), chunked."""
    flat = logits.reshape(-1, logits.shape[-1])
    positions = mask.reshape(-1).nonzero().squeeze(-1)
    means = torch.empty(len(positions), dtype=_accumulate(logits), device=logits.device)
    step = _chunk_rows(logits.shape[-1])
    for start in range(0, len(positions), step):
        means[start : start + step] = (
            flat.index_select(0, positions[start : start + step]).to(_accumulate(logits)).mean(-1)
        )
    per_position = torch.zeros(mask.numel(), dtype=means.dtype, device=logits.device)
    per_position[positions] = means
    return per_position.view(mask.shape).sum(-1)


def sequence_logps(
    model: Any, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row of ``batch``: the sum of the labelled tokens' log-probs, the number of labelled tokens, and
    the sum over labelled tokens of the mean logit (for TRL's ``logits/chosen`` metric)."""
    # Only positions that predict a labelled token need logits. With a 49k vocabulary the output layer
    # dominates a small model's step, so skip the prompt part every row shares: ``logits_to_keep`` keeps
    # the last N positions.
    labels = batch["labels"]
    trained = (labels != IGNORE_INDEX).any(dim=0).nonzero()
    # The first token has no position before it to predict it from, so it can never count.
    start = max(int(trained[0]), 1) if len(trained) else labels.shape[1] - 1
    keep = (
        labels.shape[1] - start + 1
    )  # positions start-1 .. T-1: the one before each labelled token, and T-1
    logits = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        use_cache=False,
        logits_to_keep=keep,
    ).logits[:, -keep:]  # a no-op for every model that honours logits_to_keep
    # Position p predicts token p + 1: the targets are the labels one step on, the last position's none.
    targets = torch.nn.functional.pad(labels[:, start:], (0, 1), value=IGNORE_INDEX)
    per_token, mask = token_logps(logits, targets)
    return per_token.sum(-1), mask.sum(-1), _mean_logit_sums(logits.detach(), mask)
