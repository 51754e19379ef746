"""JSON decoding for data files that may be hostile: every way a text can fail becomes a
:class:`JsonProblem` (a ``ValueError`` with a message for the user), never another exception.

What the standard decoder does not say, this does:

* an integer too long to convert (Python refuses past 4300 digits with a bare ``ValueError``) becomes a
  :class:`TooLongInteger` value, which the format parsers then report as the wrong type wherever it is
  used and ignore where it is not;
* a key given twice in one object is noted (the standard decoder keeps the last value silently, and
  other JSON readers keep the first): see :attr:`Decoded.duplicates`;
* nesting deep enough to exhaust the stack is a problem, not a RecursionError.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# Python's own limit on int(str) (sys.int_info.default_max_str_digits).
MAX_INT_DIGITS = 4300


class JsonProblem(ValueError):
    """Text that is not usable JSON; ``pos`` is the offset of the trouble when known."""

    def __init__(self, message: str, pos: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.pos = pos


class TooLongInteger:
    """Stands in for an integer literal of more than MAX_INT_DIGITS digits."""

    def __init__(self, digits: int) -> None:
        self.digits = digits

    def __repr__(self) -> str:
        return f"<a {self.digits}-digit integer>"


@dataclass(frozen=True)
class DuplicateKey:
    key: str
    same_value: bool  # both values are equal: harmless, but still worth a warning

    def __str__(self) -> str:
        if self.same_value:
            return f"key {self.key[:60]!r} is given twice in one object (with the same value)"
        return (
            f"key {self.key[:60]!r} is given twice in one object with different values; JSON readers "
            "disagree on which one counts: keep one"
        )


@dataclass
class Decoded:
    value: Any
    end: int  # offset just past the value
    duplicates: list[DuplicateKey] = field(default_factory=list)


def _int(text: str) -> int | TooLongInteger:
    digits = len(text.lstrip("-"))
    return int(text) if digits <= MAX_INT_DIGITS else TooLongInteger(digits)


class _Decoder:
    """A JSONDecoder whose object hook notes duplicate keys into the current call's list."""

    def __init__(self) -> None:
        self.found: list[DuplicateKey] = []
        self._decoder = json.JSONDecoder(parse_int=_int, object_pairs_hook=self._object)

    def _object(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, value in pairs:
            if key in obj:
                self.found.append(DuplicateKey(key, _same(obj[key], value)))
            obj[key] = value
        return obj

    def decode(self, text: str, pos: int = 0) -> Decoded:
        self.found = []
        try:
            value, end = self._decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise JsonProblem(f"{exc.msg} (column {exc.colno})", exc.pos) from None
        except RecursionError:
            raise JsonProblem("nested too deeply", pos) from None
        except ValueError as exc:  # anything else the C scanner raises, e.g. limits on numbers
            raise JsonProblem(str(exc)[:200], pos) from None
        return Decoded(value, end, list(self.found))


_DECODER = _Decoder()


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except RecursionError:
        return False


def decode(text: str, pos: int = 0) -> Decoded:
    """The JSON value starting at ``pos`` (after no whitespace), where it ends, and any duplicate keys."""
    return _DECODER.decode(text, pos)


def loads(text: str) -> Any:
    """The JSON value of the whole of ``text`` (surrounding whitespace allowed); JsonProblem otherwise."""
    start = len(text) - len(text.lstrip())
    decoded = decode(text, start)
    if text[decoded.end :].strip():
        raise JsonProblem("extra data after the JSON value", decoded.end)
    return decoded.value
