"""One sentence per config problem, naming the key, what was given and what was expected."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, Literal

from prefkit.config.keys import (
    EXPECTED,
    IGNORED_KEYS,
    RENAMED_KEYS,
    REPLACED_FLAGS,
    RESERVED_KEYS,
    VALUE_HINTS,
)
from prefkit.config.passthrough import training_argument_names
from prefkit.config.schema import Config
from prefkit.config.words import describe, one_of
from prefkit.config.yaml_input import Entry, short_repr


def _constraint_words(field_name: str) -> str:
    words = []
    for item in Config.model_fields[field_name].metadata:
        for attr, symbol in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            bound = getattr(item, attr, None)
            if bound is not None:
                # `> 0`, not `> 0.0`: the bound as a user would write it.
                shown = int(bound) if isinstance(bound, float) and bound.is_integer() else bound
                words.append(f"{symbol} {shown}")
    return " and ".join(words)


def _expected_for_field(field_name: str) -> str:
    if field_name in EXPECTED:
        return EXPECTED[field_name]
    annotation = Config.model_fields[field_name].annotation
    args = typing.get_args(annotation)
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args
    if optional:
        non_none = [a for a in args if a is not type(None)]
        annotation = non_none[0] if len(non_none) == 1 else annotation
    text = describe(annotation)
    constraint = _constraint_words(field_name)
    if constraint:
        text = f"{text} {constraint}"
    if optional:
        text += " (or null)"
    return text


def field_problem(key: str, value: Any, errors: list[dict[str, Any]]) -> str:
    """Turn pydantic's errors for one key into one sentence."""
    for error in errors:
        # Our own validators' messages already read "expected ...".
        if error["type"] in ("value_error", "assertion_error"):
            message = str(error.get("ctx", {}).get("error", error["msg"]))
            return f"{key}: got {short_repr(value)} -- {message}"
    if any(error["type"] == "finite_number" for error in errors):
        bounds = _constraint_words(key)
        return f"{key}: got {short_repr(value)} -- expected a finite number{' ' + bounds if bounds else ''}"
    hint = None
    if isinstance(value, str | int | float):
        hint = VALUE_HINTS.get((key, value.lower() if isinstance(value, str) else value))
    annotation = Config.model_fields[key].annotation
    literal = _strip_optional(annotation)
    if key not in EXPECTED and typing.get_origin(literal) is Literal:
        # A known hint beats a spelling guess: 'dpo' is one letter from 'ipo' but means 'sigmoid'.
        allowed = one_of(typing.get_args(literal), value, suggest=hint is None)
        text = f"{key}: got {short_repr(value)} -- {allowed}"
        if literal is not annotation:
            text += " (or null)"
    else:
        text = f"{key}: got {short_repr(value)} -- expected {_expected_for_field(key)}"
    if hint:
        text += f"; {hint}"
    return text


def _strip_optional(annotation: Any) -> Any:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return non_none[0]
    return annotation


def unknown_key_message(entry: Entry, config_keys: frozenset[str]) -> str:
    candidates = sorted(
        config_keys | training_argument_names() | set(IGNORED_KEYS) | set(RENAMED_KEYS) | set(REPLACED_FLAGS)
    )
    close = difflib.get_close_matches(entry.key[:100], candidates, n=1, cutoff=0.75)
    if entry.text is not None:
        text = f"{entry.origin}: unknown key {short_repr(entry.key)} in {short_repr(entry.text)}"
    else:
        text = f"{entry.origin}: unknown key {short_repr(entry.key)}"
    if entry.key == "training_arguments":
        text += " -- write TrainingArguments fields at the top level of the file"
    elif close and entry.key not in RESERVED_KEYS:
        text += f" -- did you mean {close[0]!r}?"
    return text
