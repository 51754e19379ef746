"""The :class:`Format` base class: one source shape, with its keys, ``parse`` and ``to_record``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from prefkit.data.examples import (
    Example,
    ExampleError,
    Location,
    Stage,
)
from prefkit.data.formats.fields import decode_cell, invisible, visible_text
from prefkit.errors import BadDataError

STAGES: tuple[Stage, ...] = ("dpo", "sft")


class FormatError(BadDataError):
    """A file-level format problem: no format matches, an unknown format name, bad columns/tags."""


# LLaMA-Factory's `columns` names -> the record keys our alpaca/sharegpt parsers read.
LLAMAFACTORY_COLUMNS: dict[str, str] = {
    "prompt": "instruction",
    "query": "input",
    "response": "output",
    "history": "history",
    "messages": "conversations",
    "system": "system",
    "chosen": "chosen",
    "rejected": "rejected",
}


class Format(ABC):
    """One source shape. Subclasses set the class attributes and implement parse/to_record."""

    name: ClassVar[str]
    stage: ClassVar[Stage]
    required_keys: ClassVar[tuple[str, ...]]
    optional_keys: ClassVar[tuple[str, ...]] = ()
    # Breaks ties in detection when a record carries the keys of several formats.
    priority: ClassVar[int] = 0
    # `columns` name -> this format's key (see apply_columns).
    column_targets: ClassVar[Mapping[str, str]] = LLAMAFACTORY_COLUMNS
    description: ClassVar[str] = ""

    @property
    def id(self) -> str:
        return f"{self.stage}:{self.name}"

    def matches(self, record: Mapping[str, Any]) -> bool:
        return all(key in record for key in self.required_keys)

    def require(self, record: Mapping[str, Any], key: str) -> Any:
        if key not in record:
            message = (
                f"missing key {key!r} (format {self.stage} {self.name} needs "
                f"{', '.join(self.required_keys)}; the record has {shown_keys(record)})"
            )
            near = lookalike_key(record, key)
            if near is not None:
                what = ", ".join(invisible(near)) or "different case or spaces"
                message += f" -- the record's {near!r} looks like {key!r} but has {what} in it: rename it"
            raise ExampleError(message, "missing_key")
        if record[key] is None:
            raise ExampleError(f"{key!r} is null (format {self.stage} {self.name} needs it)", "missing_key")
        return record[key]

    def parse(self, record: Mapping[str, Any], location: Location) -> Example:
        """One record -> one example; raises :class:`ExampleError` for a record it cannot use."""
        # A missing key is the first thing to report: a record of another shape would otherwise
        # fail on whatever the parser happens to look at first.
        for key in self.required_keys:
            self.require(record, key)
        return self._parse(record, location)

    @abstractmethod
    def _parse(self, record: Mapping[str, Any], location: Location) -> Example: ...

    @abstractmethod
    def to_record(self, example: Example) -> dict[str, Any]: ...

    def __repr__(self) -> str:
        return f"<format {self.id}>"


def shown_keys(record: Mapping[Any, Any], limit: int = 20) -> str:
    """The record's keys for a message: plain when readable, repr() when a key hides something."""
    keys = [k if isinstance(k, str) and k.isprintable() and not invisible(k) else repr(k) for k in record]
    keys = [k if len(k) <= 60 else k[:57] + "..." for k in keys]
    more = f", ... ({len(keys)} keys)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more if keys else "none"


def lookalike_key(record: Mapping[Any, Any], key: str) -> str | None:
    """A key of ``record`` that reads as ``key`` once invisible characters, spaces and case are gone."""
    for candidate in record:
        if isinstance(candidate, str) and candidate != key and visible_text(candidate).lower() == key.lower():
            return candidate
    return None


def is_chat(value: object) -> bool:
    return isinstance(decode_cell(value), list | dict)
