"""The output layer fused with the log-softmax: per-token log-probs straight from the last hidden states.

A model's vocabulary projection gives logits of shape ``(positions, vocabulary)``; at a 49k vocabulary
(SmolLM2) and a few hundred reply tokens that is the largest tensor of a training step, and 150k-256k
(Qwen2, Gemma) make it larger still. Here the projection and the log-softmax run together over chunks of
rows, so no more than one chunk of logits (:data:`~prefkit.model.logps.CHUNK_ELEMENTS` floats) exists at a
time, in the forward pass or the backward.

The gradient of row r's log-prob with respect to its hidden state is ``(onehot(t_r) - p_r) W`` (W the
output weight, p_r the softmax), a ``(rows, hidden)`` matrix. When W is frozen -- LoRA, the common case --
that matrix is computed in the forward pass from the chunk of probabilities at hand, and the backward
only scales each row by its incoming gradient: nothing is recomputed and no logits are kept. When W is
trained (full fine-tuning; in tied models it is the input embedding too) the backward recomputes each
chunk's logits to give W its gradient.

Each chunk's log-softmax, and Gemma 2's final soft-capping (``cap * tanh(z / cap)``), is
:mod:`prefkit.model.log_softmax`'s. The model's own output
layer is skipped for the forward (:func:`hidden_states_out`): the model returns its last hidden states where
it would return logits, at the positions ``logits_to_keep`` selects.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from prefkit.model.log_softmax import accumulate_dtype, chunk_backward, chunk_forward, row_chunks


class _HeadLogps(torch.autograd.Function):
    """``log softmax(softcap(h W^T))[target]`` and the mean logit of every row of ``hidden`` ``(M, d)``."""

    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        softcap: float | None,
        compute: torch.dtype,
        elements: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        acc = accumulate_dtype(compute)
        h, w = hidden.to(compute), weight.to(compute)
        rows_total = h.shape[0]
        out = torch.empty(rows_total, dtype=acc, device=h.device)
        lse, means = torch.empty_like(out), torch.empty_like(out)
        precompute = ctx.needs_input_grad[0] and not ctx.needs_input_grad[1]
        unit_grad = torch.empty_like(h) if precompute else None
        for rows in row_chunks(rows_total, w.shape[0], elements):
            chunk = h[rows] @ w.t()
            out[rows], lse[rows], means[rows] = chunk_forward(
                chunk, targets[rows], softcap, acc, unit_grad=precompute
            )
            if unit_grad is not None:
                unit_grad[rows] = chunk @ w
        ctx.softcap, ctx.compute, ctx.elements, ctx.hidden_dtype = softcap, compute, elements, hidden.dtype
        if precompute:
            ctx.save_for_backward(unit_grad)
        else:
            ctx.save_for_backward(h, weight, targets, lse)
        ctx.mark_non_differentiable(means)
        return out, means

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor, _: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        go = grad_out.unsqueeze(-1)
        silent = go == 0
        if len(ctx.saved_tensors) == 1:
            (unit_grad,) = ctx.saved_tensors
            grad_h = torch.where(silent, 0, unit_grad.to(go.dtype) * go)
            return grad_h.to(ctx.hidden_dtype), None, None, None, None, None
        h, weight, targets, lse = ctx.saved_tensors
        w = weight.to(ctx.compute)
        grad_h = torch.empty_like(h) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros(weight.shape, dtype=lse.dtype, device=weight.device)
        for rows in row_chunks(h.shape[0], w.shape[0], ctx.elements):
            chunk = h[rows] @ w.t()
            g = chunk_backward(chunk, targets[rows], lse[rows], go[rows], silent[rows], ctx.softcap)
            if grad_h is not None:
                grad_h[rows] = g @ w
            grad_w.add_(g.t() @ h[rows])
        grad_h = grad_h.to(ctx.hidden_dtype) if grad_h is not None else None
        return grad_h, grad_w.to(weight.dtype), None, None, None, None


def head_logps(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    softcap: float | None,
    compute: torch.dtype,
    elements: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p(target), mean logit)`` per row of ``hidden`` ``(M, d)`` under the output weight ``(V, d)``,
    computed in ``compute`` precision (the model's, or the autocast dtype) and accumulated in float32 (float64
    stays float64), ``elements`` logits at a time."""
    return _HeadLogps.apply(hidden, weight, targets, softcap, compute, elements)


# Model types whose causal-LM forward makes its logits as ``lm_head(hidden)``, then at most Gemma's final
# soft-capping (read in transformers 5.25). Elsewhere a forward may scale or post-process them (Granite,
# Cohere, Gemma 3n) in ways the fused layer would skip: those take the logits path.
FUSED_MODEL_TYPES = frozenset(
    {
        "gemma",
        "gemma2",
        "gemma3_text",
        "gpt2",
        "llama",
        "mistral",
        "mixtral",
        "olmo2",
        "phi",
        "phi3",
        "qwen2",
        "qwen2_moe",
        "qwen3",
        "qwen3_moe",
        "smollm3",
        "stablelm",
        "starcoder2",
    }
)


def _fsdp_managed(model: Any) -> bool:
    """Whether FSDP shards ``model`` (FSDP2 turns the module itself into an ``FSDPModule``; FSDP1 wraps it).
    Between forwards its output weight may be whole -- FSDP2 keeps a unit's weights gathered after a
    forward where it reshards only after the backward (accelerate's unit of the final norm and head; the
    root unit) -- but FSDP reduces and reshards a weight's gradient from hooks around the model's own
    forward: used outside it, a trained head's gradient would miss that reduction."""
    if not torch.distributed.is_available():  # a torch built without it has no FSDP either
        return False
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    wrapped = getattr(model, "_orig_mod", model)  # torch_compile
    return isinstance(wrapped, FSDPModule | FullyShardedDataParallel)


def plain_output_layer(model: Any) -> torch.nn.Linear | None:
    """The model's output layer where it is a plain bias-free linear map whose whole weight is at hand;
    None where it is anything else (a LoRA- or quantisation-wrapped layer, a weight sharded by FSDP or
    DeepSpeed ZeRO-3, a layer with hooks, a trained untied weight under DDP), or in a model type not known
    to use it plainly (:data:`FUSED_MODEL_TYPES`): those take the logits path."""
    inner = getattr(model, "module", model)  # DDP
    if getattr(getattr(inner, "config", None), "model_type", None) not in FUSED_MODEL_TYPES:
        return None
    if _fsdp_managed(model):
        return None
    get = getattr(inner, "get_output_embeddings", None)
    head = get() if get is not None else None
    if type(head) is not torch.nn.Linear or head.bias is not None:
        return None
    weight = head.weight
    wrapped = getattr(model, "_orig_mod", model)  # torch_compile wraps the DDP-wrapped model
    if isinstance(wrapped, torch.nn.parallel.DistributedDataParallel) and weight.requires_grad:
        # DDP reduces the gradients of the parameters its forward used; a trained output weight used only
        # here would get its gradient after DDP has counted it unused. Tied to the input embedding, it is
        # used inside the forward.
        embeddings = inner.get_input_embeddings()
        if embeddings is None or embeddings.weight is not weight:
            return None
    whole = weight.shape == (head.out_features, head.in_features) and type(weight.data) is torch.Tensor
    hooked = head._forward_hooks or head._forward_pre_hooks or hasattr(head, "_hf_hook")
    return head if whole and not hooked and not hasattr(weight, "ds_id") else None


def _pass_through(hidden: torch.Tensor) -> torch.Tensor:
    return hidden


@contextmanager
def hidden_states_out(model: Any, head: torch.nn.Linear) -> Iterator[float | None]:
    """For the forwards run inside it, ``model`` returns its last hidden states in place of logits (its
    output layer ``head`` passes them through, and a final soft-capping is suspended). Yields the cap."""
    config = getattr(model, "module", model).config
    softcap = getattr(config, "final_logit_softcapping", None)
    head.forward = _pass_through
    if softcap is not None:
        config.final_logit_softcapping = None
    try:
        yield softcap
    finally:
        del head.forward
        if softcap is not None:
            config.final_logit_softcapping = softcap
