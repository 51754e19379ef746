"""prefkit's trainer: transformers.Trainer with the SFT and preference losses, TRL-named metrics and
atomic checkpoints.

One forward pass over ``[chosen; rejected]`` gives the policy's per-sequence log-prob sums; the
reference's come from the same model with the adapter off (or a frozen copy) under ``no_grad``; the
loss is whatever :data:`prefkit.losses.LOSSES` says. Metrics are gathered across processes every step
and averaged over the logging window, under TRL's names.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import torch
from transformers import Trainer

from prefkit.checkpointing import AtomicCheckpoints
from prefkit.logps import sequence_logps
from prefkit.losses import LOSSES, LossOutput, LossParams, PolicyLogps
from prefkit.models import LoadedModel


class PrefTrainer(AtomicCheckpoints, Trainer):
    def __init__(
        self,
        *,
        stage: str,
        loaded: LoadedModel,
        pref_loss: str = "sigmoid",
        loss_params: LossParams | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model=loaded.model, processing_class=loaded.tokenizer, **kwargs)
        self.stage = stage
        self.loaded = loaded
        self.loss_spec = LOSSES[pref_loss]
        self.loss_params = loss_params
        # A preference loss is a mean over this micro-batch: the Trainer divides it for accumulation.
        self.loss_is_scaled_for_ga = False if stage == "dpo" else None
        self._metrics: dict[str, dict[str, list[float]]] = {
            "train": defaultdict(list),
            "eval": defaultdict(list),
        }
        self._tokens_since_log = 0
        self._last_log_time = time.perf_counter()

    # -- loss -----------------------------------------------------------------------------------------
    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        mode = "train" if model.training else "eval"
        if mode == "train":
            tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum().detach())
            self._tokens_since_log += int(tokens.sum().item())
        if self.stage == "sft":
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

        logps, counts, logit_sums = sequence_logps(model, inputs)
        half = logps.shape[0] // 2
        ref_chosen = ref_rejected = None
        if self.loss_spec.needs_reference:
            with torch.no_grad(), self.loaded.reference_mode() as reference:
                ref_logps, _, _ = sequence_logps(reference, inputs)
            ref_chosen, ref_rejected = ref_logps[:half], ref_logps[half:]
        policy = PolicyLogps(
            logps[:half], logps[half:], counts[:half], counts[half:], ref_chosen, ref_rejected
        )
        out = self.loss_spec.fn(policy, self.loss_params)

        self._record(mode, out, policy, logit_sums, counts, half)
        return (out.loss, {"losses": out.losses}) if return_outputs else out.loss

    def _record(
        self,
        mode: str,
        out: LossOutput,
        policy: PolicyLogps,
        logit_sums: torch.Tensor,
        counts: torch.Tensor,
        half: int,
    ) -> None:
        gather = self.accelerator.gather_for_metrics
        chosen, rejected = gather(out.chosen_rewards), gather(out.rejected_rewards)
        m = self._metrics[mode]
        m["rewards/chosen"].append(chosen.mean().item())
        m["rewards/rejected"].append(rejected.mean().item())
        m["rewards/accuracies"].append((chosen > rejected).float().mean().item())
        m["rewards/margins"].append((chosen - rejected).mean().item())
        m["logps/chosen"].append(gather(policy.chosen.detach()).mean().item())
        m["logps/rejected"].append(gather(policy.rejected.detach()).mean().item())
        # Mean logit over response tokens, as TRL reports it (a sum over tokens over a count of tokens).
        for name, rows in (("chosen", slice(0, half)), ("rejected", slice(half, None))):
            total, n = gather(logit_sums[rows].sum()).sum(), gather(counts[rows].sum()).sum()
            m[f"logits/{name}"].append((total / n.clamp(min=1)).item())
        for name, value in out.metrics.items():
            m[name].append(gather(value).mean().item())

    def prediction_step(
        self,
        model: Any,
        inputs: dict[str, torch.Tensor],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> Any:
        if self.stage == "sft":
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    # -- logging --------------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "eval" if any(key.startswith("eval_") for key in logs) else "train"
        averaged = {k: sum(v) / len(v) for k, v in self._metrics[mode].items() if v}
        prefix = "eval_" if mode == "eval" else ""
        logs.update({prefix + k: v for k, v in averaged.items()})
        self._metrics[mode].clear()
        if mode == "train" and "loss" in logs:
            now = time.perf_counter()
            logs["tokens_per_second"] = self._tokens_since_log / max(now - self._last_log_time, 1e-9)
            self._tokens_since_log, self._last_log_time = 0, now
        super().log(logs, start_time)
