"""Every loss has finite gradients wherever its inputs are finite -- in float32 and bf16, for per-token
log-probs from -1e-30 (a reply the model is all but certain of) to -50.

The forward value can be finite while the backward is NaN: ``torch.where`` back-propagates 0 times the
unused branch's derivative, and 0 * inf = NaN. One NaN gradient, clipped, makes every weight NaN.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from prefkit.train.losses import LOSSES, LossParams, PolicyLogps, log1mexp, preference_loss

# Mean log-prob per token of a response, from near certainty to very unlikely.
PER_TOKEN = [-1e-30, -1e-12, -3e-8, -1e-7, -1e-3, -0.5, -0.6931, -0.7, -1.0, -5.0, -20.0, -50.0]
TOKENS = 7.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_log1mexp_gradient_is_finite_near_zero_and_far(dtype):
    x = torch.tensor([*PER_TOKEN, 0.0], dtype=dtype, requires_grad=True)
    y = log1mexp(x)
    y.sum().backward()
    assert torch.isfinite(y).all(), y
    assert torch.isfinite(x.grad).all(), x.grad
    # d/dx log(1 - e^x) = -e^x / (1 - e^x): large and negative near 0, about -e^x far away.
    assert (x.grad[:-1] < 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_has_finite_gradients(name, dtype):
    # Every (chosen, rejected) combination of per-token log-probs, as a batch; the reference a little off.
    pairs = list(itertools.product(PER_TOKEN, PER_TOKEN))
    chosen = torch.tensor([c * TOKENS for c, _ in pairs], dtype=dtype, requires_grad=True)
    rejected = torch.tensor([r * TOKENS for _, r in pairs], dtype=dtype, requires_grad=True)
    counts = torch.full((len(pairs),), TOKENS)
    ref_c = (chosen.detach() * 1.01 - 0.1).to(dtype)
    ref_r = (rejected.detach() * 0.99 - 0.2).to(dtype)
    p = PolicyLogps(chosen, rejected, counts, counts, ref_c, ref_r)
    params = LossParams(beta=0.1, gamma=0.5, label_smoothing=0.1, ftx=0.5)
    out = preference_loss(name, p, params)
    out.loss.backward()
    assert torch.isfinite(out.loss), out.loss
    assert torch.isfinite(chosen.grad).all(), chosen.grad
    assert torch.isfinite(rejected.grad).all(), rejected.grad
    assert chosen.grad.abs().sum() > 0  # the loss does depend on the policy
