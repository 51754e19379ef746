"""Batch layouts. The trainer gets the same tensors from every collator of a stage.

Preference batches stack the chosen sequences over the rejected ones -- rows ``[0, B)`` are
``prompt + chosen``, rows ``[B, 2B)`` are ``prompt + rejected`` -- so policy (and reference) log-probs
of both come from one forward pass. Sequences are right-padded; ``labels`` are -100 on prompt and pad.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from prefkit.data.tokenize import IGNORE_INDEX
from prefkit.errors import PrefkitError

# The number of tokens a batch trains on, counted as in the padded layout (each reply with its own copy of
# the prompt) whatever the layout, so tokens/s compares across layouts and with TRL.
NUM_TOKENS = "num_tokens"


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
            NUM_TOKENS: torch.tensor(sum(len(s) for s in sequences)),
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
            NUM_TOKENS: torch.tensor(sum(len(f["input_ids"]) for f in features)),
        }


def pair_tokens(feature: dict[str, Any]) -> int:
    """The tokens one pair takes in a shared-prompt row: its prompt once, then both replies."""
    return len(feature["prompt_ids"]) + len(feature["chosen_ids"]) + len(feature["rejected_ids"])


def _first_fit_decreasing(sizes: list[int], capacity: int) -> tuple[list[list[int]], list[int]]:
    """Indices of ``sizes`` in rows of at most ``capacity`` (one item alone may exceed it), each placed in
    the first row it fits, longest first; and each row's load."""
    rows: list[list[int]] = []
    loads: list[int] = []
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        row = next((r for r, load in enumerate(loads) if load + sizes[i] <= capacity), None)
        if row is None:
            rows.append([i])
            loads.append(sizes[i])
        else:
            rows[row].append(i)
            loads[row] += sizes[i]
    return rows, loads


@dataclass
class SharedPromptCollator:
    """Each pair as one sequence ``prompt + chosen + rejected``: the prompt is computed once, and the
    rejected reply attends to the prompt but not to the chosen one (a 4-D attention mask; its position ids
    continue from the prompt, as in its own padded row). With ``pack_length``, several pairs share a row
    up to that many tokens (block-diagonal: a pair sees only itself), so little compute goes to padding.

    Gives the same per-sequence log-probs as :class:`PreferenceCollator` (a test proves it). The batch
    says which positions predict which token of which sequence (see :class:`prefkit.model.logps.Targets`):
    sequence ``i`` is pair i's chosen reply and ``B + i`` its rejected one.
    """

    pad_token_id: int
    pack_length: int | None = None
    pad_to_multiple_of: int | None = None

    def _rows(self, features: list[dict[str, Any]]) -> list[list[int]]:
        """Which pairs go in which row: one each; or, with ``pack_length``, the packing that computes the
        fewest positions (rows x the longest row). Pairs go first-fit, longest first, into rows of a
        capacity tried from the longest pair up to ``pack_length`` (at most 65 capacities; a pair longer
        than ``pack_length`` makes the batch that wide anyway, and then is the only capacity); the batch
        is the same pairs whatever the packing, only their placement changes (what that saves:
        docs/performance.md)."""
        if not self.pack_length:
            return [[i] for i in range(len(features))]
        sizes = [pair_tokens(f) for f in features]
        longest = max(sizes)
        top = max(self.pack_length, longest)
        capacities = (*range(longest, top, max(1, -(-(top - longest) // 64))), top)
        packings = (_first_fit_decreasing(sizes, capacity) for capacity in capacities)
        rows, _ = min(packings, key=lambda packing: len(packing[0]) * max(packing[1]))  # the first best
        return rows

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        pairs = len(features)
        ids: list[list[int]] = []
        positions: list[list[int]] = []
        groups: list[list[int]] = []  # the pair each token belongs to
        branches: list[list[int]] = []  # 0 prompt, 1 chosen, 2 rejected
        # Per row and position, the (token, sequence) pairs that position's logits predict.
        predictions: list[list[list[tuple[int, int]]]] = []
        for members in self._rows(features):
            row: dict[str, list] = {"ids": [], "pos": [], "group": [], "branch": [], "predicts": []}
            for i in members:
                f = features[i]
                prompt, chosen, rejected = f["prompt_ids"], f["chosen_ids"], f["rejected_ids"]
                n = len(prompt)
                row["ids"] += prompt + chosen + rejected
                row["pos"] += [*range(n), *range(n, n + len(chosen)), *range(n, n + len(rejected))]
                row["group"] += [i] * (n + len(chosen) + len(rejected))
                row["branch"] += [0] * n + [1] * len(chosen) + [2] * len(rejected)
                # The last prompt token predicts the first token of both replies; every other reply token
                # predicts the next token of its own reply.
                first = [(chosen[0], i)] if chosen else []
                first += [(rejected[0], pairs + i)] if rejected else []
                row["predicts"] += [[] for _ in range(n - 1)] + [first]
                row["predicts"] += [[(t, i)] for t in chosen[1:]] + [[]] * min(len(chosen), 1)
                row["predicts"] += [[(t, pairs + i)] for t in rejected[1:]] + [[]] * min(len(rejected), 1)
            ids.append(row["ids"])
            positions.append(row["pos"])
            groups.append(row["group"])
            branches.append(row["branch"])
            predictions.append(row["predicts"])

        length = max(len(r) for r in ids)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        width = len(ids)
        group = torch.full((width, length), -1, dtype=torch.long)
        branch = torch.zeros((width, length), dtype=torch.long)
        predict = torch.zeros((width, length), dtype=torch.bool)
        tokens, sequence, extra_rows, extra_tokens, extra_sequence = [], [], [], [], []
        for r in range(width):
            n = len(ids[r])
            group[r, :n] = torch.tensor(groups[r])
            branch[r, :n] = torch.tensor(branches[r])
            for p, targets in enumerate(predictions[r]):
                if not targets:
                    continue
                predict[r, p] = True
                (token, seq), *others = targets
                for other_token, other_seq in others:
                    extra_rows.append(len(tokens))
                    extra_tokens.append(other_token)
                    extra_sequence.append(other_seq)
                tokens.append(token)
                sequence.append(seq)
        # Token i may attend to token j <= i of the same pair if j is prompt or on i's own branch. A
        # padding token attends to itself only (a query with no key at all would give NaN).
        same_pair = (group.unsqueeze(2) == group.unsqueeze(1)) & (group.unsqueeze(2) >= 0)
        branch_ok = (branch.unsqueeze(1) == 0) | (branch.unsqueeze(2) == branch.unsqueeze(1))
        causal = torch.ones(length, length, dtype=torch.bool).tril()
        mask = same_pair & branch_ok & causal
        mask |= torch.eye(length, dtype=torch.bool) & (group < 0).unsqueeze(2)
        as_long = {"dtype": torch.long}
        return {
            "input_ids": _pad(ids, self.pad_token_id, self.pad_to_multiple_of),
            "position_ids": _pad(positions, 0, self.pad_to_multiple_of),
            "attention_mask": mask.unsqueeze(1),
            "predict": predict,
            "target_tokens": torch.tensor(tokens, **as_long),
            "target_sequence": torch.tensor(sequence, **as_long),
            "num_sequences": torch.tensor(2 * pairs),
            "extra_rows": torch.tensor(extra_rows, **as_long),
            "extra_tokens": torch.tensor(extra_tokens, **as_long),
            "extra_sequence": torch.tensor(extra_sequence, **as_long),
            NUM_TOKENS: torch.tensor(
                sum(
                    2 * len(f["prompt_ids"]) + len(f["chosen_ids"]) + len(f["rejected_ids"]) for f in features
                )
            ),
        }


def preference_collator(
    layout: str,
    pad_token_id: int,
    *,
    takes_mask: Callable[[int], bool],
    cutoff_len: int,
    pack_length: int | None = None,
) -> PreferenceCollator | SharedPromptCollator:
    """The collator for ``batch_layout`` (see the config key); ``auto`` is ``packed`` where the model
    supports it, else ``padded``. ``takes_mask(row_length)``: whether the model runs with a ready-made
    4-D attention mask over rows that long (:func:`prefkit.model.attention.attention_takes_mask`)."""
    pack_length = pack_length or 2 * cutoff_len
    if layout == "auto":
        layout = "packed" if takes_mask(pack_length) else "padded"
    if layout == "padded":
        return PreferenceCollator(pad_token_id)
    if not takes_mask(pack_length if layout == "packed" else cutoff_len):
        raise PrefkitError(
            f"batch_layout: {layout} needs the model's attention to take a ready-made mask with no sliding "
            "window shorter than a row; use batch_layout: padded"
        )
    return SharedPromptCollator(pad_token_id, pack_length=pack_length if layout == "packed" else None)
