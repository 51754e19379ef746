"""Preference metrics on held-out pairs: does the model find the chosen reply more likely than the
rejected one?

* ``accuracy``: the share of pairs whose chosen reply has the higher mean log-prob per token (the
  quantity SimPO optimises; it needs no reference model, so a base model and any trained model are
  measured alike, and length alone does not decide it). ``margin``: the mean difference of those
  per-token log-probs.
* ``logps/chosen``, ``logps/rejected``: mean summed log-probs of the replies (TRL's names);
  ``logps_per_token/chosen``, ``logps_per_token/rejected``: the same per token.
* ``rewards/chosen``, ``rewards/rejected``, ``rewards/margins``, ``rewards/accuracies``: the implicit
  rewards of the training method, computed by the method's own loss function (:data:`LOSSES`), with the
  reference's log-probs where the method needs them -- the model the run started from, as training used
  it (the caller says how to switch to it). Left out where the method needs a reference and there is
  none (a bare model).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from prefkit.data.collate import PreferenceCollator
from prefkit.data.examples import PreferenceExample
from prefkit.data.tokenize import ChatEncoder
from prefkit.model.logps import sequence_logps
from prefkit.train.losses import LOSSES, LossParams, PolicyLogps


@dataclass(frozen=True)
class RewardSettings:
    """The method whose implicit reward to report, and its parameters (from the run's config)."""

    pref_loss: str
    params: LossParams


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


@torch.no_grad()
def preference_metrics(
    model: Any,
    encoder: ChatEncoder,
    examples: Sequence[PreferenceExample],
    *,
    batch_size: int = 8,
    rewards: RewardSettings | None = None,
    reference: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """The metrics of the module docstring over ``examples``. ``reference()`` enters a context that yields
    the module computing as the reference does: ``model`` with another adapter active or every adapter
    off, or a model of its own."""
    if not examples:
        return {}
    collate = PreferenceCollator(encoder.tokenizer.pad_token_id)
    device = next(model.parameters()).device
    spec = LOSSES[rewards.pref_loss] if rewards else None
    reference = reference if spec and spec.needs_reference else None
    report_rewards = spec is not None and (reference is not None or not spec.needs_reference)
    was_training = model.training
    model.eval()
    columns = ("chosen", "rejected", "chosen_tokens", "rejected_tokens", "reward_chosen", "reward_rejected")
    rows: dict[str, list[float]] = {k: [] for k in columns}
    try:
        for start in range(0, len(examples), batch_size):
            features = [encoder.encode_pair(e).to_features() for e in examples[start : start + batch_size]]
            batch = {k: v.to(device) for k, v in collate(features).items()}
            logps, counts, _ = sequence_logps(model, batch)
            half = len(features)
            rows["chosen"] += logps[:half].float().tolist()
            rows["rejected"] += logps[half:].float().tolist()
            rows["chosen_tokens"] += counts[:half].float().tolist()
            rows["rejected_tokens"] += counts[half:].float().tolist()
            if report_rewards and spec and rewards:
                ref_c = ref_r = None
                if reference is not None:
                    with reference() as reference_model:
                        ref_logps, _, _ = sequence_logps(reference_model, batch)
                    ref_c, ref_r = ref_logps[:half], ref_logps[half:]
                policy = PolicyLogps(logps[:half], logps[half:], counts[:half], counts[half:], ref_c, ref_r)
                out = spec.fn(policy, rewards.params)
                rows["reward_chosen"] += out.chosen_rewards.float().tolist()
                rows["reward_rejected"] += out.rejected_rewards.float().tolist()
            if on_batch is not None:
                on_batch(half)
    finally:
        model.train(was_training)

    per_token_c = [s / max(n, 1) for s, n in zip(rows["chosen"], rows["chosen_tokens"], strict=True)]
    per_token_r = [s / max(n, 1) for s, n in zip(rows["rejected"], rows["rejected_tokens"], strict=True)]
    margins = [c - r for c, r in zip(per_token_c, per_token_r, strict=True)]
    metrics = {
        "accuracy": sum(m > 0 for m in margins) / len(margins),
        "margin": _mean(margins),
        "logps/chosen": _mean(rows["chosen"]),
        "logps/rejected": _mean(rows["rejected"]),
        "logps_per_token/chosen": _mean(per_token_c),
        "logps_per_token/rejected": _mean(per_token_r),
        "pairs": float(len(margins)),
    }
    if rows["reward_chosen"]:
        rc, rr = rows["reward_chosen"], rows["reward_rejected"]
        metrics.update(
            {
                "rewards/chosen": _mean(rc),
                "rewards/rejected": _mean(rr),
                "rewards/margins": _mean([c - r for c, r in zip(rc, rr, strict=True)]),
                "rewards/accuracies": sum(c > r for c, r in zip(rc, rr, strict=True)) / len(rc),
            }
        )
    return metrics
