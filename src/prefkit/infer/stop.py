"""When a reply ends: the model's and the tokenizer's end-of-sequence ids and the chat template's end of
turn (as a token id where it is one token, else as text the decode loop watches for)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prefkit.data.tokenize import ChatEncoder


@dataclass(frozen=True)
class StopCondition:
    ids: tuple[int, ...]  # token ids that end a reply
    strings: tuple[str, ...]  # texts that end a reply where no single token does


def _as_list(value: int | Sequence[int] | None) -> list[int]:
    if value is None:
        return []
    return [int(value)] if isinstance(value, int) else [int(v) for v in value]


def stop_condition(model: Any, encoder: ChatEncoder) -> StopCondition:
    """The union of the model's and the tokenizer's end-of-sequence ids and the template's end of turn."""
    tokenizer = encoder.tokenizer
    generation_config = getattr(model, "generation_config", None)
    ids = _as_list(getattr(generation_config, "eos_token_id", None)) + _as_list(tokenizer.eos_token_id)
    strings: list[str] = []
    marker = encoder.end_of_turn
    if marker:
        marker_ids = tokenizer(marker, add_special_tokens=False)["input_ids"]
        if len(marker_ids) == 1:
            ids += marker_ids
        else:
            strings.append(marker)
    return StopCondition(tuple(dict.fromkeys(ids)), tuple(strings))
