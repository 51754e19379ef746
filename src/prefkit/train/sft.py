"""SFT's loss without the full logits tensor: transformers' causal-LM cross-entropy, as the Trainer
computes it, from per-token log-probs at labelled positions only.

``model(labels=...)`` projects every position of every row onto the vocabulary and upcasts those logits
to float32 for the loss: ``(batch, length, vocabulary)`` floats, 1.5 GiB at Gemma 3's 262,144 tokens, a
batch of 4 and 384 positions -- the largest tensor of the step. :func:`causal_lm_loss` takes the summed
log-probs of the labelled tokens from :func:`~prefkit.model.logps.sequence_logps` (the path DPO uses: the
output layer runs at labelled positions only, in chunks, fused with the log-softmax where it is a plain
linear map) and reduces them as transformers' ``ForCausalLMLoss`` does: labels shifted by one (position
p predicts ``labels[p + 1]``), -100 ignored, the summed negative log-likelihood divided by
``num_items_in_batch`` when the Trainer gives it, else averaged over labelled tokens.

:func:`trainer_sft_loss` adds what ``Trainer.compute_loss`` (transformers 5.25) does around the model's
loss, and :func:`chunked_sft_applies` says where this path gives exactly what the Trainer would; elsewhere
(label smoothing, a ``compute_loss_func``, a caller that wants the model's outputs, context, sequence or
tensor parallelism, torch's DataParallel, Liger's fused loss, a batch with keys prefkit's collator does not
make) the trainer keeps the Trainer's own ``model(labels=...)``.
"""

from __future__ import annotations

from typing import Any

import torch

from prefkit.model.logps import sequence_logps

# What an SFT batch may hold for this path to read all of it: :class:`prefkit.data.collate.SFTCollator`'s
# keys (position ids, which :func:`sequence_logps` passes on, for padding-free layouts). Any other key is
# an input the model would have been given and this path would drop.
SFT_KEYS = frozenset({"input_ids", "attention_mask", "labels", "position_ids"})


def causal_lm_loss(
    model: Any, batch: dict[str, Any], num_items_in_batch: torch.Tensor | int | None = None
) -> torch.Tensor:
    """transformers' ``ForCausalLMLoss`` of ``model`` on ``batch`` (``input_ids``, ``attention_mask``,
    ``labels``, optionally ``position_ids``): the negative log-likelihood of the labelled tokens summed
    over ``num_items_in_batch`` where given (the labelled tokens of every micro-batch of the optimiser
    step, so that accumulated micro-batches weigh each token alike), else its mean over the batch's
    labelled tokens (0 / 0, NaN, where none is labelled, as ``cross_entropy``'s mean gives)."""
    logps, counts, _ = sequence_logps(model, batch)
    total = -logps.sum()
    if num_items_in_batch is None:
        return total / counts.sum()
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


def chunked_sft_applies(trainer: Any, inputs: dict[str, Any], return_outputs: bool) -> bool:
    """Whether :func:`trainer_sft_loss` gives what ``Trainer.compute_loss`` would for ``inputs``."""
    if return_outputs:  # the caller wants the model's outputs (its logits), not only the loss
        return False
    if trainer.label_smoother is not None or trainer.compute_loss_func is not None:
        return False  # a loss other than the plain cross-entropy
    if getattr(trainer.args, "use_liger_kernel", False):
        return False  # Liger patches the model to fuse the output layer and its loss itself
    if trainer.args.n_gpu > 1:
        return False  # torch's DataParallel replicates the model on every forward, output layer included
    parallelism = getattr(trainer.accelerator, "parallelism_config", None)
    if parallelism is not None and (
        parallelism.cp_enabled or parallelism.sp_enabled or parallelism.tp_enabled
    ):
        # Sequences sharded across processes (the labels arrive shifted), or a tensor-parallel output layer.
        return False
    return "labels" in inputs and set(inputs) <= SFT_KEYS


def trainer_sft_loss(
    trainer: Any, model: Any, inputs: dict[str, Any], num_items_in_batch: torch.Tensor | int | None
) -> torch.Tensor:
    """``Trainer.compute_loss``'s value for a causal LM given ``labels``, through :func:`causal_lm_loss`."""
    # The Trainer hands num_items_in_batch to models whose forward takes loss kwargs (every family
    # prefkit trains), which then divide by it; others average over the micro-batch, and the Trainer
    # divides that mean by the accumulation steps itself (training_step's loss_is_scaled_for_ga).
    takes_count = trainer.model_accepts_loss_kwargs and num_items_in_batch is not None
    # The output layer runs outside the model's forward, which is all that accelerate puts under the
    # mixed-precision autocast: it gets the same autocast here (as the preference losses' pass does).
    with trainer.accelerator.autocast():
        loss = causal_lm_loss(model, inputs, num_items_in_batch if takes_count else None)
    if trainer.args.average_tokens_across_devices and takes_count:
        # num_items_in_batch counts every process's tokens there, and DDP averages the gradients over
        # processes: the Trainer scales the loss back up by the number of processes (data-parallel
        # replicas: tensor parallelism, which would divide them, takes the Trainer's path).
        loss = loss * trainer.accelerator.num_processes
    return loss
