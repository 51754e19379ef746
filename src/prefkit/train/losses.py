"""Preference losses: pure functions of per-sequence log-probabilities, in one registry.

Every loss takes a :class:`PolicyLogps` (the policy's summed log-probabilities of the chosen and
rejected responses, their token counts, and -- for methods that need one -- the reference model's
sums) and returns a :class:`LossOutput`: the scalar loss, the per-example preference losses and the
implicit rewards that are logged as ``rewards/chosen`` and ``rewards/rejected``. The trainer never
branches on a loss name: it asks :data:`LOSSES` whether a reference is needed and calls the function.

Notation: ``pi_c``/``pi_r`` are summed log-probs of chosen/rejected under the policy, ``ref_c``/``ref_r``
under the reference, ``n_c``/``n_r`` token counts, ``beta`` the temperature (``pref_beta``).

=========  ============================================================================  =========
name       per-example loss                                                              reference
=========  ============================================================================  =========
sigmoid    -(1-e) log s(beta*h) - e log s(-beta*h),  h = (pi_c-ref_c) - (pi_r-ref_r)     yes
hinge      relu(1 - beta*h)                                                              yes
ipo        ((pi_c-ref_c)/n_c - (pi_r-ref_r)/n_r - 1/(2 beta))^2                           yes
kto_pair   1 - s(beta*((pi_c-ref_c) - KL_r)) and 1 - s(beta*(KL_c - (pi_r-ref_r))),       yes
           KL_c, KL_r = global-batch means of the log-ratios, clamped at 0, not differentiated
orpo       NLL(chosen) - beta * log s(log odds(p_c) - log odds(p_r)),  p = exp(pi/n)     no
simpo      -(1-e) log s(beta*(pi_c/n_c - pi_r/n_r) - gamma) - e log s(-(...))           no
=========  ============================================================================  =========

``e`` is ``dpo_label_smoothing`` (conservative DPO). ``pref_ftx`` adds ``pref_ftx * NLL(chosen)`` to any of
them, NLL being the mean negative log-likelihood per chosen token over the batch (the usual causal-LM
loss; it is also ORPO's own NLL term).

Conventions follow TRL 1.16 where TRL has the method (tests compare numbers with it): DPO rewards are
``beta * (pi - ref)``; IPO's per-token normalisation is TRL's (confirmed there with the IPO authors);
SimPO is TRL's ``CPOConfig(loss_type="simpo", cpo_alpha=0)``; ORPO is TRL's ``odds_ratio_loss``. TRL
removed ``kto_pair`` (LLaMA-Factory still lists it and then fails with "Unknown loss type: kto_pair"); it
is implemented here from the KTO paper's paired form as TRL <= 0.8 defined it, with one difference: the
KL reference points are not differentiated (the paper: z_0 is not back-propagated through, it only
controls saturation; TRL's KTOTrainer detaches it too) and are means over the whole batch of all
processes (:attr:`PolicyLogps.batch_mean`), so a DDP run computes what one process would.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class PolicyLogps:
    chosen: Tensor  # (B,) summed log-probs of the chosen response tokens
    rejected: Tensor  # (B,)
    chosen_tokens: Tensor  # (B,) number of response tokens
    rejected_tokens: Tensor  # (B,)
    ref_chosen: Tensor | None = None  # (B,) the reference's sums, for methods that need one
    ref_rejected: Tensor | None = None
    # The mean of a (B,) tensor over the whole batch -- every process's rows. The trainer passes an
    # all-reducing one under DDP; the default is this process's rows. Used on detached values only.
    batch_mean: Callable[[Tensor], Tensor] = Tensor.mean

    def chosen_nll(self) -> Tensor:
        """Mean negative log-likelihood per chosen token over the batch."""
        return -self.chosen.sum() / self.chosen_tokens.sum().clamp(min=1)


@dataclass(frozen=True)
class LossParams:
    beta: float
    gamma: float = 0.5  # simpo_gamma
    label_smoothing: float = 0.0  # dpo_label_smoothing
    ftx: float = 0.0  # pref_ftx


@dataclass
class LossOutput:
    loss: Tensor  # scalar: what is back-propagated
    losses: Tensor  # (B,) the preference term per example
    chosen_rewards: Tensor  # (B,) detached
    rejected_rewards: Tensor  # (B,) detached
    metrics: dict[str, Tensor] = field(default_factory=dict)  # extra per-method scalars to log


LossFn = Callable[[PolicyLogps, LossParams], LossOutput]


@dataclass(frozen=True)
class LossSpec:
    fn: LossFn
    needs_reference: bool
    paper: str


def log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x <= 0, accurate everywhere (Maechler 2012).

    The naive ``log1p(-exp(x))`` loses all precision as x -> 0 (p -> 1) and ``log(-expm1(x))``
    underflows as x -> -inf; picking the branch at -log 2 keeps both ends exact. x is clamped just
    below 0 so that a response the model is certain of gives a large finite log-odds, not inf/NaN --
    the NaN losses ORPO users meet elsewhere come from exactly this term.
    """
    x = x.clamp(max=-torch.finfo(x.dtype).tiny)
    near = x > -math.log(2)
    # torch.where evaluates both branches and back-propagates 0 * (the unused branch's derivative); at x
    # near 0 log1p(-exp(x)) has an infinite derivative and 0 * inf = NaN. So each branch gets an input at
    # which it is finite (-1, harmless to both) wherever it is not the one used.
    near_x = torch.where(near, x, -1.0)
    far_x = torch.where(near, -1.0, x)
    return torch.where(near, torch.log(-torch.expm1(near_x)), torch.log1p(-torch.exp(far_x)))


def _smoothed_sigmoid(logits: Tensor, label_smoothing: float) -> Tensor:
    return -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)


def _ref(p: PolicyLogps) -> tuple[Tensor, Tensor]:
    if p.ref_chosen is None or p.ref_rejected is None:
        raise ValueError("this loss needs the reference model's log-probs")
    return p.chosen - p.ref_chosen, p.rejected - p.ref_rejected


def _with_ftx(
    p: PolicyLogps,
    params: LossParams,
    losses: Tensor,
    chosen: Tensor,
    rejected: Tensor,
    metrics: dict[str, Tensor] | None = None,
) -> LossOutput:
    loss = losses.mean()
    if params.ftx:
        loss = loss + params.ftx * p.chosen_nll()
    return LossOutput(loss, losses, chosen.detach(), rejected.detach(), metrics or {})


def sigmoid_loss(p: PolicyLogps, params: LossParams) -> LossOutput:
    chosen_ratio, rejected_ratio = _ref(p)
    losses = _smoothed_sigmoid(params.beta * (chosen_ratio - rejected_ratio), params.label_smoothing)
    return _with_ftx(p, params, losses, params.beta * chosen_ratio, params.beta * rejected_ratio)


def hinge_loss(p: PolicyLogps, params: LossParams) -> LossOutput:
    chosen_ratio, rejected_ratio = _ref(p)
    losses = torch.relu(1 - params.beta * (chosen_ratio - rejected_ratio))
    return _with_ftx(p, params, losses, params.beta * chosen_ratio, params.beta * rejected_ratio)


def ipo_loss(p: PolicyLogps, params: LossParams) -> LossOutput:
    chosen_ratio, rejected_ratio = _ref(p)
    delta = chosen_ratio / p.chosen_tokens.clamp(min=1) - rejected_ratio / p.rejected_tokens.clamp(min=1)
    losses = (delta - 1 / (2 * params.beta)) ** 2
    return _with_ftx(p, params, losses, params.beta * chosen_ratio, params.beta * rejected_ratio)


def kto_pair_loss(p: PolicyLogps, params: LossParams) -> LossOutput:
    """KTO on pairs: each chosen reply is a desirable example, each rejected one undesirable.

    The KL reference point of the chosen half is estimated from the rejected half and vice versa, as
    batch means of the log-ratios clamped at 0 (Ethayarajh et al. 2024, eq. 7 of the HALOs report),
    detached and taken over every process's rows (see the module docstring).
    The per-example loss here is the mean of its two halves, so the batch mean equals the original
    mean over the concatenated 2B terms.
    """
    chosen_ratio, rejected_ratio = _ref(p)
    chosen_kl = p.batch_mean(chosen_ratio.detach()).clamp(min=0)
    rejected_kl = p.batch_mean(rejected_ratio.detach()).clamp(min=0)
    desirable = 1 - torch.sigmoid(params.beta * (chosen_ratio - rejected_kl))
    undesirable = 1 - torch.sigmoid(params.beta * (chosen_kl - rejected_ratio))
    losses = (desirable + undesirable) / 2
    metrics = {"kl/chosen": chosen_kl.detach(), "kl/rejected": rejected_kl.detach()}
    return _with_ftx(p, params, losses, params.beta * chosen_ratio, params.beta * rejected_ratio, metrics)


def orpo_loss(p: PolicyLogps, params: LossParams) -> LossOutput:
    chosen_avg = p.chosen / p.chosen_tokens.clamp(min=1)
    rejected_avg = p.rejected / p.rejected_tokens.clamp(min=1)
    log_odds = (chosen_avg - rejected_avg) - (log1mexp(chosen_avg) - log1mexp(rejected_avg))
    ratio = F.logsigmoid(log_odds)
    losses = -params.beta * ratio
    nll = p.chosen_nll()
    loss = nll + losses.mean() + (params.ftx * nll if params.ftx else 0.0)
    metrics = {
        "nll_loss": nll.detach(),
        "log_odds_ratio": ratio.mean().detach(),
        "log_odds_chosen": log_odds.mean().detach(),
    }
    return LossOutput(
        loss, losses, (params.beta * chosen_avg).detach(), (params.beta * rejected_avg).detach(), metrics
    )


def simpo_loss(p: PolicyLogps, params: LossParams) -> LossOutput:
    chosen_avg = p.chosen / p.chosen_tokens.clamp(min=1)
    rejected_avg = p.rejected / p.rejected_tokens.clamp(min=1)
    losses = _smoothed_sigmoid(
        params.beta * (chosen_avg - rejected_avg) - params.gamma, params.label_smoothing
    )
    return _with_ftx(p, params, losses, params.beta * chosen_avg, params.beta * rejected_avg)


LOSSES: dict[str, LossSpec] = {
    "sigmoid": LossSpec(sigmoid_loss, True, "DPO, Rafailov et al. 2023 (arXiv:2305.18290)"),
    "hinge": LossSpec(hinge_loss, True, "SLiC-HF, Zhao et al. 2023 (arXiv:2305.10425)"),
    "ipo": LossSpec(ipo_loss, True, "IPO, Azar et al. 2023 (arXiv:2310.12036)"),
    "kto_pair": LossSpec(kto_pair_loss, True, "KTO, Ethayarajh et al. 2024 (arXiv:2402.01306)"),
    "orpo": LossSpec(orpo_loss, False, "ORPO, Hong et al. 2024 (arXiv:2403.07691)"),
    "simpo": LossSpec(simpo_loss, False, "SimPO, Meng et al. 2024 (arXiv:2405.14734)"),
}


def preference_loss(name: str, logps: PolicyLogps, params: LossParams) -> LossOutput:
    return LOSSES[name].fn(logps, params)
