"""Types and values in words, for error sentences: ``int | None`` -> 'an integer or null', a list of
allowed values with a did-you-mean."""

from __future__ import annotations

import difflib
import enum
import types
import typing
from collections.abc import Sequence
from typing import Any, Literal

import yaml


def one_of(allowed: Sequence[Any], value: Any, *, suggest: bool = True) -> str:
    """'expected one of a, b, c -- did you mean 'b'?'"""
    close: list[str] = []
    by_lower = {str(a).lower(): a for a in allowed}
    if suggest and isinstance(value, str):
        close = difflib.get_close_matches(value.lower()[:100], list(by_lower), n=1, cutoff=0.6)
    if close and len(allowed) > 12:
        # Forty optimizer names bury the one line that matters; the suggestion is enough.
        shown = ", ".join(yaml_scalar(a) for a in allowed[:3])
        text = f"expected one of {len(allowed)} values ({shown}, ...)"
    else:
        text = "expected one of " + ", ".join(yaml_scalar(a) for a in allowed)
    if close:
        text += f" -- did you mean {by_lower[close[0]]!r}?"
    return text


def describe(hint: Any) -> str:
    """A type hint in words: `int | None` -> 'an integer or null'."""
    if hint is type(None) or hint is None:
        return "null"
    if hint is Any:
        return "any value"
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(str(member.value) for member in hint)
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(yaml_scalar(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if any(isinstance(a, type) and issubclass(a, enum.Enum) for a in args):
            # `SaveStrategy | str`: the str only exists so the enum's values can be written as strings.
            args = tuple(a for a in args if a is not str)
        parts = [describe(a) for a in args if a is not type(None)]
        if type(None) in args:
            parts.append("null")
        return " or ".join(dict.fromkeys(parts))
    if hint is list or origin is list:
        return "a list"
    if hint is dict or origin is dict:
        return "a mapping"
    return f"a value of type {getattr(hint, '__name__', hint)}"


def yaml_scalar(value: Any) -> str:
    """A value as the user would write it in YAML (`true`, not `True`)."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()
