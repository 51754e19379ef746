"""Fusing the gradient-accumulation window: ``per_device_train_batch_size`` x
``gradient_accumulation_steps`` examples trained in fewer, larger forwards and backwards.

The seeds' configs (and LLaMA-Factory's examples) train at batch 1 x accumulation 8: eight forwards of
one pair each, where the packer has nothing to pack and each small matmul runs far below what the
machine can do. Fused by a factor ``f``, the Trainer sees batches of ``batch x f`` and accumulates
``accumulation / f`` of them: the same examples in the same order (the sampler's order does not depend
on the batch size), the same optimiser steps.

The same gradient, too. A preference loss is a mean over its micro-batch and some terms depend on the
micro-batch as a whole (``pref_ftx``'s NLL is a token-weighted mean over it; ``kto_pair``'s KL points
are its means), so the trainer splits a fused batch back into the configured micro-batches for the loss
and the logged metrics (:meth:`prefkit.train.trainer.PrefTrainer.compute_loss`) and averages their
losses, as the Trainer's accumulation would. SFT's loss is already a sum over the window's labelled
tokens divided by their count (``num_items_in_batch``), whatever the batches. Only the forward's
rounding differs (a longer packed row, a different padding), within bf16/fp32 tolerance.

``f`` is the largest divisor of the accumulation steps whose fused batch stays within
``fuse_accumulation_tokens`` at its longest: every sequence as long as the data's longest row (at most
``cutoff_len``), two sequences per pair. A run that chose batch 1 to fit a small GPU is not handed a
batch eight times as large unless its sequences are short -- and a config whose ``cutoff_len`` is far
above its data's lengths (LLaMA-Factory's examples say 2048 for rows of a few hundred tokens) is fused
by what its batches can actually hold. ``fuse_accumulation_tokens: 0`` turns fusing off. By default it
is 1536 on the CPU and off on a GPU: the memory a fused batch needs there is not estimated yet, and the
seeds' T4 and 8 GB cards are exactly where batch 1 was chosen because it fits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from prefkit.model.training import trains_on_gpu

if TYPE_CHECKING:
    from datasets import Dataset

    from prefkit.config import Config


# The default budget on the CPU, from races at batch 1 x accumulation 8 on SmolLM2-135M
# (docs/performance.md): the bundled pairs (rows of up to 160 tokens) trained 42% faster fused 8 to a
# batch (2560 tokens) than unfused, and fused 4 to a batch (1280) within 1.5% of 8, at 0.6 GiB less;
# LLaMA-Factory's dpo_en_demo at cutoff 512 trained 10% slower fused 2 to a batch (2048), at 1.20x the
# memory (one race each) -- a micro-batch of ~1000 tokens is already an efficient forward, and a fused
# batch pads each row to its longest. 1536 fuses the first and not the second.
CPU_TOKENS = 1536


@dataclass(frozen=True)
class Fusion:
    micro_batch: int  # the configured per-device batch: the loss's unit
    factor: int  # micro-batches per fused batch (1: not fused)
    accumulation: int  # the configured gradient_accumulation_steps

    @property
    def batch(self) -> int:
        return self.micro_batch * self.factor

    @property
    def steps(self) -> int:
        """The accumulation steps the Trainer runs: fused batches per optimiser step."""
        return self.accumulation // self.factor

    def describe(self) -> str:
        return (
            f"gradient accumulation fused: {self.accumulation} micro-batches of {self.micro_batch} train as "
            f"{self.steps} batch{'es' if self.steps > 1 else ''} of {self.batch} (the same gradient; "
            "fuse_accumulation_tokens: 0 turns this off)"
        )


def longest_row(dataset: Dataset) -> int:
    """The longest row an example of ``dataset`` (prepared for training) makes: a pair's prompt with its
    longer reply (its ``length`` column), an SFT example's tokens. Read from the Arrow table underneath,
    without turning a column into Python lists; a selection of that table is bounded by all of it."""
    import pyarrow.compute as pc

    table = dataset.data.table
    if "length" in table.column_names:
        lengths = table.column("length")
    else:
        lengths = pc.list_value_length(table.column("input_ids"))
    return int(pc.max(lengths).as_py() or 0)


def accumulation_fusion(config: Config, longest: int | None = None) -> Fusion:
    """How the accumulation window of ``config`` is fused (see the module docstring); ``longest``: the
    training data's :func:`longest_row`, where it is known (else every sequence counts ``cutoff_len``)."""
    batch, steps = config.per_device_train_batch_size, config.gradient_accumulation_steps
    budget = config.fuse_accumulation_tokens
    if budget is None:  # the CPU has memory to spare; on a GPU a batch of 1 is often what fits
        budget = 0 if trains_on_gpu(config) else CPU_TOKENS
    sequences = 2 if config.stage == "dpo" else 1  # a pair is two sequences (chosen, rejected)
    length = config.cutoff_len if longest is None else max(1, min(longest, config.cutoff_len))
    per_micro_batch = batch * sequences * length
    factor = 1
    if budget > 0 and config.stage in ("dpo", "sft"):
        factor = max(
            f for f in range(1, steps + 1) if steps % f == 0 and (f == 1 or f * per_micro_batch <= budget)
        )
    return Fusion(batch, factor, steps)
