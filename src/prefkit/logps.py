"""Per-token and per-sequence log-probabilities of labelled tokens, for the trainer and for evaluation.

The log-softmax is taken over the vocabulary in chunks of token positions, in float32 (float64 stays
float64), and only at the positions that carry a label. The full ``(rows, positions, vocab)`` float32
tensor is never built: with a 150k-token vocabulary (Qwen2, Gemma) it would be the largest tensor of a
training step. The backward pass recomputes each chunk's softmax from the logits (kept in the model's
dtype) and the saved log-normaliser, so what autograd holds is the logits once plus one float per
labelled token.

Under accelerate's mixed precision (``bf16``/``fp16`` in the Trainer) the logits do not arrive in the
model's dtype: accelerate converts every output of a prepared model's forward to float32, so there the
saved logits are float32 (the float32 log-softmax is still never built). Called on a plain bf16 model
(evaluation) they stay bf16.
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
    """log softmax(logits)[target] for every row of a contiguous ``(M, V)`` logits matrix, computed and
    differentiated in chunks of rows (views: nothing is gathered or copied but one float32 chunk at a
    time). Also returns each row's mean logit (not differentiable), for TRL's ``logits/*`` metric."""

    @staticmethod
    def forward(
        ctx: Any, logits: torch.Tensor, targets: torch.Tensor, labelled: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = _accumulate(logits)
        out = torch.empty(logits.shape[0], dtype=dtype, device=logits.device)
        lse = torch.empty_like(out)
        means = torch.empty_like(out)
        step = _chunk_rows(logits.shape[-1])
        for start in range(0, logits.shape[0], step):
            rows = slice(start, start + step)
            x = logits[rows].to(dtype)
            lse[rows] = torch.logsumexp(x, dim=-1)
            out[rows] = x.gather(-1, targets[rows].unsqueeze(-1)).squeeze(-1) - lse[rows]
            means[rows] = x.mean(-1)
        ctx.save_for_backward(logits, targets, labelled, lse)
        ctx.mark_non_differentiable(means)
        return out, means

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor, _: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        logits, targets, labelled, lse = ctx.saved_tensors
        grad = torch.empty_like(logits)
        step = _chunk_rows(logits.shape[-1])
        for start in range(0, logits.shape[0], step):
            rows = slice(start, start + step)
            go = grad_out[rows].unsqueeze(-1)
            g = torch.exp(logits[rows].to(lse.dtype) - lse[rows].unsqueeze(-1)).mul_(-go)
            g.scatter_add_(-1, targets[rows].unsqueeze(-1), go)
            # An unlabelled row's gradient is 0 even where its logits are not finite (a padding position
            # whose attention had nothing to look at): 0 * NaN would be NaN.
            grad[rows] = g.masked_fill_(~labelled[rows].unsqueeze(-1), 0)
        return grad, None, None


def _label_logps(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log p(label), mean logit, mask) per position of ``(B, T, V)`` logits aligned with ``(B, T)``
    labels; 0 where the label is IGNORE_INDEX."""
    mask = labels != IGNORE_INDEX
    targets = labels.masked_fill(~mask, 0).reshape(-1)
    values, means = _LabelLogps.apply(logits.reshape(-1, logits.shape[-1]), targets, mask.reshape(-1))
    # where, not a product with the mask: an unlabelled position's value may be NaN, and 0 * NaN is NaN.
    return torch.where(mask, values.view(mask.shape), 0), torch.where(mask, means.view(mask.shape), 0), mask


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p(label) at every position, 0 where the label is IGNORE_INDEX; the mask of labelled
    positions)`` for ``logits`` of shape ``(B, T, V)`` already aligned with ``labels`` ``(B, T)``."""
    values, _, mask = _label_logps(logits, labels)
    return values, mask


def sequence_logps(
    model: Any, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row of ``batch``: the sum of the labelled tokens' log-probs, the number of labelled tokens, and
    the sum over labelled tokens of the mean logit (for TRL's ``logits/chosen`` metric)."""
    # Only positions that predict a labelled token need logits. With a 49k vocabulary the output layer
    # dominates a small model's step, so skip the prompt part every row shares: ``logits_to_keep`` keeps
    # the last N positions, from the one before the first labelled token to the end.
    labels = batch["labels"]
    trained = (labels != IGNORE_INDEX).any(dim=0).nonzero()
    # A label at position 0 has no position before it to predict it: it is never counted.
    start = max(int(trained[0]), 1) if len(trained) else labels.shape[1] - 1
    logits = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        use_cache=False,
        logits_to_keep=labels.shape[1] - start + 1,
    ).logits
    # Position p predicts token p + 1; the last position predicts nothing. Shifting the labels rather than
    # slicing the logits keeps the logits contiguous, so the chunks above are views.
    targets = torch.nn.functional.pad(labels[:, start:], (0, 1), value=IGNORE_INDEX)
    per_token, mean_logits, mask = _label_logps(logits, targets)
    return per_token.sum(-1), mask.sum(-1), mean_logits.detach().sum(-1)
