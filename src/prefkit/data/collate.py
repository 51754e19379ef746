"""Batch layouts. The trainer gets the same tensors from every collator of a stage.

Preference batches stack the chosen sequences over the rejected ones -- rows ``[0, B)`` are
``prompt + chosen``, rows ``[B, 2B)`` are ``prompt + rejected`` -- so policy (and reference) log-probs
of both come from one forward pass. Sequences are right-padded; ``labels`` are -100 on prompt and pad.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from prefkit.data.tokenize import IGNORE_INDEX


def _pad(rows: list[list[int]], value: int, multiple: int | None) -> torch.Tensor:
    length = max(len(r) for r in rows)
    if multiple:
        length = -(-length // multiple) * multiple
    return torch.tensor([r + [value] * (length - len(r)) for r in rows], dtype=torch.long)


@dataclass
class PreferenceCollator:
    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        sequences, labels = [], []
        for side in ("chosen_ids", "rejected_ids"):
            for f in features:
                sequences.append(f["prompt_ids"] + f[side])
                labels.append([IGNORE_INDEX] * len(f["prompt_ids"]) + f[side])
        input_ids = _pad(sequences, self.pad_token_id, self.pad_to_multiple_of)
        return {
            "input_ids": input_ids,
            "attention_mask": _pad([[1] * len(s) for s in sequences], 0, self.pad_to_multiple_of),
            "labels": _pad(labels, IGNORE_INDEX, self.pad_to_multiple_of),
        }


@dataclass
class SFTCollator:
    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {
            "input_ids": _pad([f["input_ids"] for f in features], self.pad_token_id, self.pad_to_multiple_of),
            "attention_mask": _pad([[1] * len(f["input_ids"]) for f in features], 0, self.pad_to_multiple_of),
            "labels": _pad([f["labels"] for f in features], IGNORE_INDEX, self.pad_to_multiple_of),
        }
