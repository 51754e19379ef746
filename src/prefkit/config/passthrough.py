"""TrainingArguments pass-through: any key naming a field of ``transformers.TrainingArguments`` is
checked against that field's type hint and handed to the trainer unchanged.

transformers is imported lazily -- only when a key is not one of prefkit's own -- so that importing the
config (and ``prefkit --help``) stays fast."""

from __future__ import annotations

import dataclasses
import enum
import functools
import typing
from typing import Any

from pydantic import TypeAdapter, ValidationError

from prefkit.config.words import describe, one_of
from prefkit.config.yaml_input import short_repr

# Fields transformers 5.23 renamed, keeping the old names as deprecated aliases (a FutureWarning on every
# run; gone in v6). The seeds and LLaMA-Factory configs use the old names. prefkit keeps the config as
# written -- saved configs and sweep identities stay as they were -- and hands the trainer the new name;
# the loader treats the two as one key, and resume compares them as one.
DEPRECATED_ALIASES = {
    "gradient_checkpointing": "activation_checkpointing",
    "gradient_checkpointing_kwargs": "activation_checkpointing_kwargs",
}


# Hints that say less than the field takes. `fsdp` is typed `str | None` only so that a bare `--fsdp`
# parses on the command line (its field's `const` is True); transformers 5.2x asks for `fsdp: true` and
# warns that the strings ("full_shard auto_wrap") are deprecated.
_WIDER_HINTS: dict[str, Any] = {"fsdp": bool | str | None}


@functools.cache
def _training_argument_hints() -> dict[str, Any]:
    from transformers import TrainingArguments  # lazy: pulls in torch

    fields = dataclasses.fields(TrainingArguments)
    init_fields = {f.name for f in fields if f.init and not f.name.startswith("_")}
    hints = typing.get_type_hints(TrainingArguments)
    return {name: _WIDER_HINTS.get(name, hints[name]) for name in init_fields if name in hints}


def training_argument_names() -> frozenset[str]:
    return frozenset(_training_argument_hints())


def _enums_in(hint: Any) -> list[type[enum.Enum]]:
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return [hint]
    return [found for arg in typing.get_args(hint) for found in _enums_in(arg)]


def validate_training_argument(key: str, value: Any) -> tuple[Any, str | None]:
    """Check one passthrough value against its TrainingArguments type hint.  Returns the value (in plain,
    JSON-friendly form) and a problem sentence, or None."""
    hint = _training_argument_hints()[key]
    expected = describe(hint)
    enums = _enums_in(hint)
    if value is False and any("no" in {m.value for m in e} for e in enums):
        value = "no"  # YAML 1.1 reads a bare `save_strategy: no` as false
    try:
        checked = TypeAdapter(hint).validate_python(value)
    except ValidationError:
        return value, f"{key}: got {short_repr(value)} -- expected {expected}"
    # Hints such as `optim: OptimizerNames | str` accept any string; the enum says which ones work.
    if isinstance(checked, enum.Enum):
        checked = checked.value
    if enums and isinstance(checked, str):
        allowed = [member.value for enum_type in enums for member in enum_type]
        if checked not in allowed:
            return value, f"{key}: got {short_repr(value)} -- {one_of(allowed, checked)}"
    return checked, None


def current_argument_names(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with each deprecated alias under its current name (the loader leaves at most one of the
    two set)."""
    return {DEPRECATED_ALIASES.get(key, key): value for key, value in values.items()}
