"""A leaner forward for plain LoRA linear layers: ``base(x) + s (x A^T) B^T`` with the scaling and the
add done by the second matmul (``torch.addmm``, alpha = s).

peft's forward casts each adapted layer's input to the adapter's float32 (a copy of the activation, which
autocast then casts back to bf16 for the matmul: a second copy), multiplies the ``(tokens, out)`` update by
the scaling and adds it to the base output: two more full-size passes, in the forward and again in the
backward, in each of the 210 layers ``lora_target: all`` adapts in SmolLM2. Here the update is computed in
the dtype the base layer's output has, and rounded once where peft rounds three times.

Anything but the plain case -- dropout while training, DoRA or another variant, a LoRA bias, several
active adapters, a mixed-adapter batch, a merged or disabled adapter, extra arguments, a bf16 base with a
float32 adapter outside autocast (peft computes that update in float32) -- takes peft's own forward.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch


def _plain_adapter(layer: Any) -> str | None:
    """The one active adapter of ``layer`` when its forward is plain LoRA, else None."""
    if layer.disable_adapters or layer.merged:
        return None
    active = [name for name in layer.active_adapters if name in layer.lora_A]
    if len(active) != 1:
        return None
    name = active[0]
    # getattr: peft versions before variants (0.17 is the floor) mark DoRA by use_dora only.
    variant = name in getattr(layer, "lora_variant", {}) or getattr(layer, "use_dora", {}).get(name, False)
    if variant or getattr(layer, "lora_bias", {}).get(name, False):
        return None
    dropout = layer.lora_dropout[name]
    if layer.training and isinstance(dropout, torch.nn.Dropout) and dropout.p > 0:
        return None
    return name


def _forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    name = None if args or kwargs else _plain_adapter(self)
    if name is None:
        return type(self).forward(self, x, *args, **kwargs)
    a, b = self.lora_A[name].weight, self.lora_B[name].weight
    result = self.base_layer(x)
    dtype = result.dtype
    if a.dtype != dtype and not torch.is_autocast_enabled(result.device.type):
        return type(self).forward(self, x)
    down = x.reshape(-1, x.shape[-1]).to(dtype) @ a.to(dtype).t()
    flat = torch.addmm(result.reshape(-1, result.shape[-1]), down, b.to(dtype).t(), alpha=self.scaling[name])
    return flat.view(result.shape)


def use_lean_lora_forward(model: torch.nn.Module) -> int:
    """Give every LoRA linear layer of ``model`` the lean forward; returns how many layers got it."""
    from peft.tuners.lora.layer import Linear

    layers = [m for m in model.modules() if type(m) is Linear]
    for layer in layers:
        # A partial of a module-level function, not a bound method: the model still pickles (torch.save).
        layer.forward = partial(_forward, layer)
    return len(layers)
