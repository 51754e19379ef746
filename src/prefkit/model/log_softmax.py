"""The one chunked log-softmax: ``log softmax(z)[target]`` per row of logits ``z``, its log-normaliser and
the row's mean logit, and the gradient with respect to ``z`` -- worked through in blocks of rows small enough
to stay in the cores' caches, accumulated in float32 (float64 stays float64), with Gemma 2's final
soft-capping applied where a model has it.

Two paths feed it: the fused output layer (:mod:`~prefkit.model.output_layer`) hands it each chunk of logits
it has just projected from hidden states; :func:`label_logps` hands it a model's own logits, for output
layers that cannot be fused (LoRA-wrapped, quantised, sharded).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.autograd.function import once_differentiable


def row_chunks(rows: int, width: int, elements: int) -> Iterator[slice]:
    """Consecutive row slices of a ``(rows, width)`` matrix, each of at most ``elements`` elements (or one
    row)."""
    step = max(1, elements // max(width, 1))
    return (slice(start, start + step) for start in range(0, rows, step))


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision logits (the log-normaliser needs it), float64 kept as it is."""
    return torch.promote_types(dtype, torch.float32)


# Float32 logits taken through the softmax at a time (2 MiB: ten rows at a 49k vocabulary), small enough to
# stay in the cores' caches: each pass of the softmax runs there, and the chunk itself is read once and
# written once, in the compute dtype. (At the race's shape 2**19 and 2**20 measured alike, 2**17 and 2**21
# slower: benchmarks/output_layer.py --block N.)
BLOCK_ELEMENTS = 2**19


def _blocks(chunk: torch.Tensor) -> Iterator[slice]:
    return row_chunks(chunk.shape[0], chunk.shape[-1], BLOCK_ELEMENTS)


def _capped(logits: torch.Tensor, softcap: float | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Soft-capped logits (Gemma 2: ``cap * tanh(z / cap)``) and the tanh the capping's derivative needs."""
    if softcap is None:
        return logits, None
    tanh = torch.tanh(logits / softcap)
    return tanh * softcap, tanh


def _to_unit_gradient(probs: torch.Tensor, targets: torch.Tensor, tanh: torch.Tensor | None) -> torch.Tensor:
    """d log p(target) / d (pre-cap) logits, ``onehot - p``, in place of ``probs``."""
    grad = probs.neg_().scatter_add_(-1, targets.unsqueeze(-1), torch.ones_like(probs[:, :1]))
    return grad if tanh is None else grad.mul_(1 - tanh * tanh)


def chunk_forward(
    chunk: torch.Tensor,
    targets: torch.Tensor,
    softcap: float | None,
    acc: torch.dtype,
    *,
    unit_grad: bool = False,
    keep: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(log p(target), log-normaliser, mean logit)`` per row of one chunk of raw logits, in ``acc``; with
    ``unit_grad`` the chunk is overwritten, in its dtype, by the gradient of each row's log-prob with respect
    to its raw logits. Otherwise the chunk is worked on in place where it is in ``acc`` already, unless
    ``keep`` (logits the backward pass still needs)."""
    out, lse, means = (torch.empty(chunk.shape[0], dtype=acc, device=chunk.device) for _ in range(3))
    for rows in _blocks(chunk):
        x, tanh = _capped(chunk[rows].to(acc, copy=keep), softcap)
        means[rows] = x.mean(-1)
        picked = x.gather(-1, targets[rows].unsqueeze(-1)).squeeze(-1)
        peak = x.amax(-1, keepdim=True)
        total = x.sub_(peak).exp_().sum(-1, keepdim=True)
        lse[rows] = (peak + total.log()).squeeze(-1)
        out[rows] = picked - lse[rows]
        if unit_grad:
            chunk[rows] = _to_unit_gradient(x.div_(total), targets[rows], tanh)
    return out, lse, means


def chunk_backward(
    chunk: torch.Tensor,
    targets: torch.Tensor,
    lse: torch.Tensor,
    go: torch.Tensor,
    silent: torch.Tensor,
    softcap: float | None,
) -> torch.Tensor:
    """Overwrites one chunk of raw logits with the gradient of the loss with respect to them, given each
    row's log-normaliser ``lse`` and incoming gradient ``go``."""
    for rows in _blocks(chunk):
        x, tanh = _capped(chunk[rows].to(lse.dtype), softcap)
        probs = x.sub_(lse[rows].unsqueeze(-1)).exp_()
        grad = _to_unit_gradient(probs, targets[rows], tanh).mul_(go[rows])
        # A row whose output gets no gradient has none to give, even where its logits are not finite:
        # 0 * NaN would be NaN.
        chunk[rows] = grad.masked_fill_(silent[rows], 0)
    return chunk


class _LabelLogps(torch.autograd.Function):
    """log softmax(logits)[target] for every row of a contiguous ``(M, V)`` logits matrix. The backward
    pass recomputes each block's softmax from the logits and the saved log-normaliser. Also returns each
    row's mean logit (not differentiable), for TRL's ``logits/*`` metric."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, lse, means = chunk_forward(logits, targets, None, accumulate_dtype(logits.dtype), keep=True)
        ctx.save_for_backward(logits, targets, lse)
        ctx.mark_non_differentiable(means)
        return out, means

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor, _: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, targets, lse = ctx.saved_tensors
        go = grad_out.unsqueeze(-1)
        return chunk_backward(logits.clone(), targets, lse, go, go == 0, None), None


def label_logps(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log softmax(logits)[target], mean logit)`` per row of ``(M, V)`` logits; ``targets`` ``(M,)``."""
    return _LabelLogps.apply(logits.contiguous(), targets)
