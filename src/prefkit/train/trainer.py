"""prefkit's trainer: transformers.Trainer with the SFT and preference losses, TRL-named metrics, a guard
against non-finite steps and atomic checkpoints.

One forward pass over ``[chosen; rejected]`` gives the policy's per-sequence log-prob sums; the
reference's come from the same model with the adapter off (or a frozen copy) under ``no_grad``; the
loss is whatever :data:`prefkit.train.losses.LOSSES` says. Metrics are gathered across processes every step
and averaged over the logging window, under TRL's names. A step whose loss or gradient is not finite is
skipped and named (see :mod:`prefkit.train.nonfinite`). SFT's loss is the Trainer's own cross-entropy,
computed without the full logits tensor (:mod:`prefkit.train.sft`).
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from prefkit.data.collate import NUM_TOKENS
from prefkit.model.logps import sequence_logps
from prefkit.model.training import TrainingModel, place_like
from prefkit.train.losses import LOSSES, LossOutput, LossParams, PolicyLogps
from prefkit.train.nonfinite import NonFiniteGuard, NonFiniteWeightsError, nonfinite_parameters
from prefkit.train.refcache import PAIR_KEYS, ReferenceCache, fill, pair_key
from prefkit.train.run.checkpoints import AtomicCheckpoints
from prefkit.train.saved_adapter import record_base_model
from prefkit.train.sft import chunked_sft_applies, trainer_sft_loss

logger = logging.getLogger(__name__)

EXAMPLE_IDS = "example_ids"  # the batch key carrying each row's "file:line"


@dataclass
class PrefTrainingArguments(TrainingArguments):
    """TrainingArguments with the two settings prefkit's trainer reads from them."""

    # transformers v5 reads a `warmup_steps` of 1.0 as one step, so a ratio of 1.0 (all warm-up) cannot be
    # passed through it; the ratio is kept here and turned into steps once the number of steps is known.
    warmup_ratio: float | None = field(default=None, metadata={"help": "fraction of steps spent warming up"})
    max_nonfinite_steps: int = field(default=3, metadata={"help": "skipped steps in a row before stopping"})

    def get_warmup_steps(self, num_training_steps: int) -> int:
        if self.warmup_ratio is not None:
            return math.ceil(num_training_steps * self.warmup_ratio)
        return super().get_warmup_steps(num_training_steps)


@dataclass
class ExampleIdCollator:
    """Wraps a collator so each batch also carries its examples' ids (``file:line``), in row order, for
    messages about a batch. The wrapped collators read only their own keys."""

    collator: Any

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator(features)
        batch[EXAMPLE_IDS] = [str(f.get("example_id", "")) for f in features]
        if features and "prompt_ids" in features[0]:
            batch[PAIR_KEYS] = [pair_key(f) for f in features]
        return batch


class _NonFiniteCheck(TrainerCallback):
    """Asks the guard, once per optimiser step on every process, just before the step."""

    def __init__(self, trainer: PrefTrainer) -> None:
        self.trainer = trainer

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        t = self.trainer
        # With fp16's gradient scaler, infinite gradients are the scaler's to handle (it skips and rescales).
        check_gradients = t.accelerator.scaler is None
        step = state.global_step + 1
        last = bool(state.max_steps) and step >= state.max_steps
        t.nonfinite.decide(step, t.model.parameters(), check_gradients=check_gradients, last=last)


class PrefTrainer(AtomicCheckpoints, Trainer):
    def __init__(
        self,
        *,
        stage: str,
        loaded: TrainingModel,
        pref_loss: str = "sigmoid",
        loss_params: LossParams | None = None,
        reference_cache: ReferenceCache | None = None,
        generation_eval: Callable[[Any], dict[str, Any]] | None = None,
        micro_batch: int | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("data_collator") is not None:
            kwargs["data_collator"] = ExampleIdCollator(kwargs["data_collator"])
        super().__init__(model=loaded.model, processing_class=loaded.tokenizer, **kwargs)
        self.stage = stage
        self.loaded = loaded
        if loaded.reference is not None:
            place_like(loaded.reference, self.model)  # the Trainer placed the policy; the copy follows
        self.loss_spec = LOSSES[pref_loss]
        self.loss_params = loss_params
        self.reference_cache = reference_cache
        # A preference loss is a mean over this micro-batch: the Trainer divides it for accumulation.
        self.loss_is_scaled_for_ga = False if stage == "dpo" else None
        # Training batches are the accumulation window fused (prefkit.train.fusion): the loss and the
        # logged metrics are taken per configured micro-batch of this many pairs, then averaged.
        self.micro_batch = micro_batch
        self._window_micro_batches = 1
        self._metrics: dict[str, dict[str, list[float]]] = {
            "train": defaultdict(list),
            "eval": defaultdict(list),
        }
        self._tokens_since_log = 0
        self._last_log_time = time.perf_counter()
        # eval_generate: called with the model at each evaluation; its metrics join the eval logs (and so
        # are visible to metric_for_best_model). See prefkit.train.generation_eval.
        self.generation_eval = generation_eval
        self.nonfinite = NonFiniteGuard(
            getattr(self.args, "max_nonfinite_steps", 3),
            any_process=self._any_process,
            gather_ids=self._gather_ids,
            is_main=self.is_world_process_zero(),
        )
        self.add_callback(_NonFiniteCheck(self))

    # -- across processes -----------------------------------------------------------------------------
    def _any_process(self, flag: bool) -> bool:
        if self.accelerator.num_processes == 1:
            return flag
        total = self.accelerator.reduce(torch.tensor(float(flag), device=self.args.device), "sum")
        return bool(total.item() > 0)

    def _gather_ids(self, ids: list[str]) -> list[str]:
        if self.accelerator.num_processes == 1:
            return ids
        from accelerate.utils import gather_object

        return list(gather_object(ids))

    def _batch_mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean of per-example values over every process's rows (unequal batch sizes included)."""
        if self.accelerator.num_processes == 1:
            return values.mean()
        total = torch.stack([values.sum(), values.new_tensor(float(values.numel()))])
        total = self.accelerator.reduce(total, "sum")
        return total[0] / total[1]

    def _get_grad_norm(self, model: Any, grad_norm: Any = None) -> Any:
        """The Trainer's gradient norm of this step (the one it clips by, and logs), handed to the guard too:
        after clipping by an infinite norm the gradients are all zeros, so the guard cannot see it later."""
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        self.nonfinite.observe_grad_norm(grad_norm)
        return grad_norm

    def create_optimizer(self, model: Any = None) -> Any:
        optimizer = super().create_optimizer(model) if model is not None else super().create_optimizer()
        self.nonfinite.wrap_step(optimizer)
        return optimizer

    # -- loss -----------------------------------------------------------------------------------------

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        mode = "train" if model.training else "eval"
        example_ids = inputs.pop(EXAMPLE_IDS, None)
        num_tokens = inputs.pop(NUM_TOKENS, None)
        pair_keys = inputs.pop(PAIR_KEYS, None)
        if mode == "train" and num_tokens is not None:
            tokens = self.accelerator.gather_for_metrics(num_tokens.reshape(1))
            self._tokens_since_log += int(tokens.sum().item())
        if self.stage == "sft":
            # The output layer at labelled positions only, never the full (rows, length, vocabulary)
            # logits: the same loss as the Trainer's model(labels=...) (prefkit.train.sft).
            if chunked_sft_applies(self, inputs, return_outputs):
                result = trainer_sft_loss(self, model, inputs, num_items_in_batch)
            else:
                result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if mode == "train":
                self.nonfinite.observe(result[0] if return_outputs else result, example_ids)
            return result

        # The output layer runs outside the model's forward (accelerate puts only that under the
        # mixed-precision autocast): here it gets the same autocast, as the reference's pass below does.
        with self.accelerator.autocast():
            logps, counts, logit_sums = sequence_logps(model, inputs)
        half = logps.shape[0] // 2
        ref_chosen = ref_rejected = None
        if self.loss_spec.needs_reference:
            ref_chosen, ref_rejected = self._reference_logps(inputs, pair_keys, logps)
        outputs = []
        for rows in self._micro_batches(half, mode):
            policy = PolicyLogps(
                logps[:half][rows],
                logps[half:][rows],
                counts[:half][rows],
                counts[half:][rows],
                ref_chosen[rows] if ref_chosen is not None else None,
                ref_rejected[rows] if ref_rejected is not None else None,
                batch_mean=self._batch_mean,
            )
            out = self.loss_spec.fn(policy, self.loss_params)
            sums = torch.cat([logit_sums[:half][rows], logit_sums[half:][rows]])
            self._record(mode, out, policy, sums, torch.cat([policy.chosen_tokens, policy.rejected_tokens]))
            outputs.append(out)
        loss = torch.stack([out.loss for out in outputs]).sum()
        if mode == "train" and self.micro_batch:
            # The Trainer divides a batch's loss by the batches in this window; each micro-batch's mean
            # loss must count 1 / (micro-batches in the window), as unfused accumulation counts it.
            loss = loss * self.current_gradient_accumulation_steps / self._window_micro_batches
        else:
            loss = loss / len(outputs)
        if mode == "train":
            self.nonfinite.observe(loss, example_ids)
        return (loss, {"losses": torch.cat([out.losses for out in outputs])}) if return_outputs else loss

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: Any) -> Any:
        """The Trainer's batches for one optimiser step; with fused batches, also how many configured
        micro-batches they hold (fewer than the full window at the end of an epoch)."""
        batches, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self.micro_batch:
            size = self.micro_batch
            self._window_micro_batches = sum(-(-len(b[EXAMPLE_IDS]) // size) for b in batches) or 1
        return batches, num_items

    def _micro_batches(self, pairs: int, mode: str) -> list[slice]:
        """The configured micro-batches of a fused training batch (one slice for an unfused one)."""
        size = self.micro_batch if mode == "train" and self.micro_batch else pairs
        return [slice(start, min(start + size, pairs)) for start in range(0, pairs, size)]

    def precompute_reference(self, load_copy: Any = None) -> None:
        """Fill the reference cache for every train and eval pair not in it yet, before training. A frozen
        copy the caller loads (full fine-tuning) is used for that and dropped after: training then reads
        the reference from the cache alone."""
        cache = self.reference_cache
        assert cache is not None
        datasets = [d for d in (self.train_dataset, self.eval_dataset) if d is not None]
        features = [f for d in datasets for f in d]
        keys = [pair_key(f) for f in features]
        complete = len(cache.lookup(keys)) == len(set(keys))
        if self.accelerator.num_processes > 1:
            # Decided together: a process that returned here while another went on to fill would leave
            # that one waiting at fill's barriers (and a sharded forward) for ever.
            flag = torch.tensor([0 if complete else 1], device=self.args.device)
            complete = int(self.accelerator.reduce(flag, reduction="sum").item()) == 0
        if complete:
            logger.info("reference log-probs of all %d pairs are cached (%s)", len(set(keys)), cache.path)
            return
        copy = load_copy() if load_copy is not None and not self.loaded.has_reference else None
        if copy is not None:
            self.loaded.reference = place_like(copy, self.model)
        started = time.perf_counter()
        with self.loaded.reference_mode() as reference:
            done = fill(
                cache,
                reference,
                features,
                self.data_collator,
                batch_size=self.args.per_device_eval_batch_size,
                autocast=self.accelerator.autocast,
                rank=self.accelerator.process_index,
                world_size=self.accelerator.num_processes,
                barrier=self.accelerator.wait_for_everyone if self.accelerator.num_processes > 1 else None,
            )
        self.accelerator.wait_for_everyone()
        logger.info(
            "computed the reference log-probs of %d pairs in %.0f s", done, time.perf_counter() - started
        )
        if copy is not None:
            self.loaded.reference = None  # training reads the cache; the copy's memory goes back
            del copy

    def _reference_logps(
        self, inputs: dict[str, Any], pair_keys: list[str] | None, logps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference's (chosen, rejected) sums: from the cache where every pair of the batch is in it,
        else computed (and cached)."""
        cache = self.reference_cache
        cached = cache.get(pair_keys) if cache is not None and pair_keys else None
        if cached is not None:
            return cached[0].to(logps.device, logps.dtype), cached[1].to(logps.device, logps.dtype)
        if not self.loaded.has_reference:
            raise RuntimeError(
                "the reference log-probs of a batch are not in the cache and no reference is loaded"
            )
        # A frozen copy is not the prepared model: its forward runs under the policy's mixed-precision
        # autocast only if given it here (for the LoRA reference it is the same forward, already in it).
        with torch.no_grad(), self.loaded.reference_mode() as reference, self.accelerator.autocast():
            ref_logps, _, _ = sequence_logps(reference, inputs)
        half = ref_logps.shape[0] // 2
        if cache is not None and pair_keys:
            cache.put(pair_keys, ref_logps[:half], ref_logps[half:])
        return ref_logps[:half], ref_logps[half:]

    def _record(
        self, mode: str, out: LossOutput, policy: PolicyLogps, logit_sums: torch.Tensor, counts: torch.Tensor
    ) -> None:
        """One micro-batch's metrics (``logit_sums``, ``counts``: its chosen rows, then its rejected)."""
        half = logit_sums.shape[0] // 2
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
        inputs = {k: v for k, v in inputs.items() if k not in (EXAMPLE_IDS, NUM_TOKENS)}
        if self.stage == "sft":
            if not prediction_loss_only or not chunked_sft_applies(self, inputs, False):
                # The caller wants logits too (compute_metrics): the model's own forward gives them.
                return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
            return self._sft_eval_loss(model, inputs)
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def _sft_eval_loss(self, model: Any, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, None, None]:
        """Trainer.prediction_step's loss, through the chunked path: the Trainer counts the batch's
        labelled tokens as it does for training (across processes, under average_tokens_across_devices)
        and compute_loss divides by that count."""
        inputs = self._prepare_inputs(inputs)
        num_items_in_batch = self._get_num_items_in_batch([inputs], self.args.device)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)
        return loss.detach().mean(), None, None

    # -- logging --------------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "eval" if any(key.startswith("eval_") for key in logs) else "train"
        averaged = {k: sum(v) / len(v) for k, v in self._metrics[mode].items() if v}
        prefix = "eval_" if mode == "eval" else ""
        logs.update({prefix + k: v for k, v in averaged.items()})
        self._metrics[mode].clear()
        if mode == "eval" and self.generation_eval is not None:
            logs.update({f"eval_{k}": v for k, v in self.generation_eval(self.model).items()})
        if mode == "train" and "loss" in logs:
            now = time.perf_counter()
            logs["tokens_per_second"] = self._tokens_since_log / max(now - self._last_log_time, 1e-9)
            self._tokens_since_log, self._last_log_time = 0, now
            logs["nonfinite_steps"] = self.nonfinite.skipped
            if self.nonfinite.end_log_window():
                logs["loss"] = math.nan  # not the 0.0 the Trainer's NaN filter leaves
        super().log(logs, start_time)

    # -- saving ---------------------------------------------------------------------------------------
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Refuse to save non-finite weights (as a checkpoint or as the final model); record the base model
        a user can load the adapter on."""
        broken = nonfinite_parameters(self.model)
        if self._any_process(bool(broken)):
            where = output_dir or self.args.output_dir
            raise NonFiniteWeightsError(
                f"the trained weights hold NaN or infinite values ({len(broken)} tensors, e.g. "
                f"{', '.join(broken[:3]) or 'on another process'}): refusing to save them to {where}. "
                "Lower learning_rate, or resume from an earlier checkpoint."
            )
        super().save_model(output_dir, _internal_call)
        if self.args.should_save:
            record_base_model(Path(output_dir or self.args.output_dir), self.loaded.base_model_id)
