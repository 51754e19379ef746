"""Per-sequence log-probabilities of labelled tokens, for the trainer and for evaluation, whatever the
batch layout.

Every layout (padded rows, a shared prompt, packed rows: see :mod:`prefkit.data.collate`) says which
positions' logits are needed and which token each predicts for which sequence. Only those positions
reach the output layer (``logits_to_keep`` as a boolean mask), and the log-softmax over the vocabulary
is taken in chunks of rows, in float32 (float64 stays float64): the full ``(rows, positions, vocab)``
float32 tensor is never built -- with a 150k-token vocabulary (Qwen2, Gemma) it would be the largest
tensor of a training step.

Where the output layer is a plain linear map (every family the seeds use), it is fused with the
log-softmax (:mod:`~prefkit.model.output_layer`): the model returns its last hidden states and no logits
tensor exists beyond one chunk. Otherwise (a LoRA-wrapped or quantised output layer, a sharded weight) the
model's logits are read in place and differentiated in blocks (:func:`~prefkit.model.log_softmax.label_logps`:
the backward pass recomputes each block's softmax from the logits and the saved log-normaliser). Under
accelerate's mixed precision those logits arrive in float32 (accelerate converts every output of a
prepared model's forward), one more reason to compute them at the predicting positions only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from prefkit.data.tokenize import IGNORE_INDEX
from prefkit.model.attention import ATTENTION_TAKES_BOOLEAN_MASK, additive_mask
from prefkit.model.loader import forward_dtype
from prefkit.model.log_softmax import label_logps
from prefkit.model.output_layer import head_logps, hidden_states_out, plain_output_layer

# Logits the fused output layer projects at a time (positions x vocabulary): 2**24 is about 340 positions
# at a 49k vocabulary and 110 at Qwen2's 152k, 32 MiB in bf16. (The log-softmax then works through each
# chunk in smaller blocks: :data:`prefkit.model.log_softmax.BLOCK_ELEMENTS`.)
CHUNK_ELEMENTS = 2**24


@dataclass(frozen=True)
class Targets:
    """What a batch asks of the output layer, in any layout.

    ``predict`` marks the positions whose logits are needed; in row-major order, the k-th of them
    predicts ``tokens[k]`` for output sequence ``sequence[k]``. A position that predicts a token for more
    than one sequence (the last prompt token predicts the first token of both chosen and rejected when
    they share one prompt) lists its other targets in ``extra_rows`` (indices into those positions),
    ``extra_tokens`` and ``extra_sequence``."""

    predict: torch.Tensor  # (B, L) bool
    tokens: torch.Tensor  # (M,)
    sequence: torch.Tensor  # (M,)
    sequences: int
    extra_rows: torch.Tensor | None = None  # (E,)
    extra_tokens: torch.Tensor | None = None
    extra_sequence: torch.Tensor | None = None

    @classmethod
    def from_labels(cls, labels: torch.Tensor) -> Targets:
        """Padded rows: position p predicts ``labels[:, p + 1]``; row r is output sequence r."""
        following = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
        predict = following != IGNORE_INDEX
        rows = torch.arange(labels.shape[0], device=labels.device).unsqueeze(1).expand_as(labels)
        return cls(predict, following[predict], rows[predict], labels.shape[0])

    @classmethod
    def from_batch(cls, batch: dict[str, Any]) -> Targets:
        if "labels" in batch:
            return cls.from_labels(batch["labels"])
        return cls(
            batch["predict"],
            batch["target_tokens"],
            batch["target_sequence"],
            int(batch["num_sequences"]),
            batch.get("extra_rows"),
            batch.get("extra_tokens"),
            batch.get("extra_sequence"),
        )


def model_attention_mask(model: Any, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A 2-D padding mask as it is; a 4-D boolean mask (True: may attend) in the form the model's attention
    implementation takes a ready-made mask: boolean for SDPA, additive for eager."""
    if mask.dim() != 4:
        return mask
    config = getattr(model, "module", model).config  # under DDP the model is wrapped
    implementation = getattr(config, "_attn_implementation", "sdpa")
    if implementation in ATTENTION_TAKES_BOOLEAN_MASK:
        return mask
    if implementation == "eager":
        return additive_mask(mask, dtype)
    raise ValueError(
        f"the {implementation!r} attention implementation takes no ready-made attention mask: use the "
        "padded batch layout with it"
    )


def sequence_logps(model: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per output sequence of ``batch`` (rows of a padded batch; chosen then rejected for the shared-
    prompt layouts): the sum of its labelled tokens' log-probs, the number of labelled tokens, and the
    sum over labelled tokens of the mean logit (for TRL's ``logits/chosen`` metric)."""
    targets = Targets.from_batch(batch)
    inputs: dict[str, Any] = {
        "input_ids": batch["input_ids"],
        "attention_mask": model_attention_mask(
            model, batch["attention_mask"], forward_dtype(next(model.parameters()))
        ),
    }
    if "position_ids" in batch:
        inputs["position_ids"] = batch["position_ids"]
    # The output layer runs only where a labelled token is predicted: prompt and padding positions never
    # reach the vocabulary projection.
    tokens, sequence = targets.tokens, targets.sequence
    extra = targets.extra_rows is not None and len(targets.extra_rows) > 0
    if extra:
        tokens = torch.cat([tokens, targets.extra_tokens])
        sequence = torch.cat([sequence, targets.extra_sequence])
    head = plain_output_layer(model)
    if head is not None:
        with hidden_states_out(model, head) as softcap:
            hidden = model(**inputs, use_cache=False, logits_to_keep=targets.predict).logits
        if extra:
            hidden = torch.cat([hidden, hidden[targets.extra_rows]])
        compute = forward_dtype(head.weight)
        values, means = head_logps(hidden, head.weight, tokens, softcap, compute, CHUNK_ELEMENTS)
    else:
        logits = model(**inputs, use_cache=False, logits_to_keep=targets.predict).logits
        values, means = label_logps(logits, targets.tokens)
        if extra:
            extra_values, extra_means = label_logps(logits[targets.extra_rows], targets.extra_tokens)
            values, means = torch.cat([values, extra_values]), torch.cat([means, extra_means])
    sums = values.new_zeros(targets.sequences).index_add(0, sequence, values)
    mean_sums = means.new_zeros(targets.sequences).index_add(0, sequence, means.detach())
    counts = torch.bincount(sequence, minlength=targets.sequences)
    return sums, counts, mean_sums
