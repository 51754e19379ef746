"""Attention under a ready-made mask on a CPU: transformers' eager numerics at flash attention's memory.

The shared-prompt and packed batch layouts hand the model a 4-D boolean mask. With one, torch's SDPA on a
CPU takes its flash kernel's masked path, whose backward is slow (docs/performance.md has the figures).
Here attention is computed as transformers' eager
implementation computes it -- the two matmuls in the compute dtype, the softmax in float32 -- but the
backward recomputes the probabilities from q and k, as flash attention does, so no
``heads x positions x positions`` probabilities are kept per layer (only the boolean mask, one tensor shared
by all layers). Grouped-query heads are computed against their shared
key/value head without copying it per head.

Models that train with ``sdpa`` are switched to :data:`IMPLEMENTATION`, whose masks are sdpa's; anything
but a boolean 4-D mask on a CPU (a GPU, no mask, dropout, soft-capping, an attention bias, one query
position) goes to transformers' own sdpa.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable

IMPLEMENTATION = "prefkit_sdpa"
ATTENTION_TAKES_BOOLEAN_MASK = ("sdpa", IMPLEMENTATION)


def _probabilities(
    grouped_q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor, scale: float
) -> torch.Tensor:
    """softmax(q k^T * scale + bias) in the bias's (float32 or float64) dtype; ``grouped_q`` is
    ``(B, KV, G * L, D)`` (the G query heads of each key/value head one after another), bias
    ``(B or 1, 1, L, S)``."""
    scores = torch.matmul(grouped_q, k.transpose(-1, -2)).to(bias.dtype).mul_(scale)
    batch, kv_heads, rows, keys = scores.shape
    positions = bias.shape[-2]
    scores.view(batch, kv_heads, rows // positions, positions, keys).add_(bias.unsqueeze(1))
    return torch.softmax(scores, -1)


_BIAS = "_prefkit_additive_bias"


def _bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The boolean mask as an additive bias in the scores' accumulation dtype (float32, or float64). Additive,
    as eager attention masks: a broadcast add is ~30x faster here than a masked fill, and a query that may
    attend to nothing gets uniform weights instead of NaN. Every layer of a forward gets the same mask
    tensor, so the bias is built once and kept on the mask itself: one for all layers, forward and
    backward, alive as long as the mask is (rebuilt if the mask is changed in place by a torch operation;
    a write through ``.data`` or numpy goes unseen, as it does by autograd)."""
    acc = torch.promote_types(dtype, torch.float32)
    # An inference tensor has no version counter to tell an in-place change by, and dynamo cannot trace the
    # cache (torch_compile): there it is built each time.
    if mask.is_inference() or torch.compiler.is_compiling():
        return additive_mask(mask, acc)
    cache = mask.__dict__.setdefault(_BIAS, {})
    key = (acc, mask._version)
    if key not in cache:
        cache.clear()
        cache[key] = additive_mask(mask, acc)
    return cache[key]


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask (True: may attend) as eager attention's additive one: 0 where allowed, the dtype's
    lowest value where not. (The one place such a mask is built.)"""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(
        ~mask, torch.finfo(dtype).min
    )


class _MaskedAttention(torch.autograd.Function):
    """``softmax(q k^T * scale, masked) v`` for q ``(B, H, L, D)``, k and v ``(B, KV, S, D)``, a boolean mask
    ``(B or 1, 1, L, S)`` (True: may attend)."""

    @staticmethod
    def forward(
        ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float
    ) -> torch.Tensor:
        batch, heads, positions, dim = q.shape
        grouped_q = q.reshape(batch, k.shape[1], (heads // k.shape[1]) * positions, dim)
        out = torch.matmul(_probabilities(grouped_q, k, _bias(mask, q.dtype), scale).to(q.dtype), v)
        # The mask, not a bias of this layer's own, is kept: one for the whole model (see _bias).
        ctx.save_for_backward(grouped_q, k, v, mask, out)
        ctx.scale, ctx.shape = scale, q.shape
        return out.view(q.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grouped_q, k, v, mask, out = ctx.saved_tensors
        bias = _bias(mask, grouped_q.dtype)
        dtype, acc = grouped_q.dtype, bias.dtype
        grad = grad.reshape(out.shape).to(dtype)
        probs = _probabilities(grouped_q, k, bias, ctx.scale)
        grad_v = torch.matmul(probs.to(dtype).transpose(-1, -2), grad)
        row_dot = (grad.to(acc) * out.to(acc)).sum(-1, keepdim=True)
        # bf16 minus float32 gives float32: the cast and the subtraction in one pass.
        grad_scores = probs.mul_(torch.matmul(grad, v.transpose(-1, -2)) - row_dot).to(dtype)
        # The scale goes on the (positions x head size) products, not the (positions x positions) scores.
        grad_q = torch.matmul(grad_scores, k).mul_(ctx.scale).view(ctx.shape)
        grad_k = torch.matmul(grad_scores.transpose(-1, -2), grouped_q).mul_(ctx.scale)
        return grad_q, grad_k, grad_v, None, None


def masked_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float
) -> torch.Tensor:
    """Attention output ``(B, H, L, D)``; see :class:`_MaskedAttention`."""
    return _MaskedAttention.apply(q, k, v, mask, scale)


def attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function interface: ``(output (B, L, H, D), None)``."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    ours = (
        query.device.type == "cpu"
        and attention_mask is not None
        and attention_mask.dtype == torch.bool
        and attention_mask.dim() == 4
        and attention_mask.shape[1] == 1
        and query.shape[2] > 1
        and query.shape[1] % key.shape[1] == 0
        and not (dropout and module.training)
        and kwargs.get("softcap") is None
        and kwargs.get("position_bias") is None
        and (torch.is_autocast_enabled("cpu") or query.dtype == key.dtype == value.dtype)
    )
    if not ours:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    # The backward runs outside autocast, so q, k and v enter in one dtype: under autocast the one its
    # matmuls would take (rotary embeddings leave q and k in float32 beside a bf16 v in full fine-tuning).
    if torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
        query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    out = masked_attention(query, key, value, attention_mask, scale)
    return out.transpose(1, 2).contiguous(), None


def use_lean_attention(model: Any) -> bool:
    """Switch a model that runs sdpa to :data:`IMPLEMENTATION` (registered with transformers here, with sdpa's
    masks). Returns whether it was switched."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    AttentionInterface.register(IMPLEMENTATION, attention_forward)
    AttentionMaskInterface.register(IMPLEMENTATION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    model.set_attn_implementation(IMPLEMENTATION)
    return model.config._attn_implementation == IMPLEMENTATION


def attention_takes_mask(model_config: Any, row_length: int) -> bool:
    """Whether a model runs with a ready-made 4-D attention mask for rows up to ``row_length`` tokens: its
    attention implementation accepts one (flash-attention kernels do not), and no sliding window (which the
    ready-made mask would not apply) is shorter than a row."""
    if getattr(model_config, "_attn_implementation", "sdpa") not in (*ATTENTION_TAKES_BOOLEAN_MASK, "eager"):
        return False
    window = getattr(model_config, "sliding_window", None)
    return not (isinstance(window, int) and window < row_length)
