"""The internal example types every source format normalises to, and the problems found on the way.

Every reader turns its records into exactly one of two shapes:

* :class:`PreferenceExample` -- a prompt (a list of messages ending with a user turn, optionally
  led by a system message) and two assistant replies, ``chosen`` and ``rejected``;
* :class:`SFTExample` -- a conversation whose assistant turns are the training targets.

Each example remembers where it came from (:class:`Location`), so that every later problem -- a
prompt too long for ``cutoff_len``, a duplicate, an empty reply -- can be reported as ``file:line``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

Role = Literal["system", "user", "assistant"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant")


@dataclass(frozen=True)
class Message:
    role: Role
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class Location:
    """Where a record sits in its file: a 1-based line for text formats, a 1-based row otherwise."""

    file: str
    line: int | None = None
    row: int | None = None

    def __str__(self) -> str:
        if self.line is not None:
            return f"{self.file}:{self.line}"
        if self.row is not None:
            return f"{self.file}:row {self.row}"
        return self.file


@dataclass(frozen=True)
class PreferenceExample:
    prompt: tuple[Message, ...]
    chosen: str
    rejected: str
    location: Location

    @property
    def system(self) -> str | None:
        return self.prompt[0].content if self.prompt and self.prompt[0].role == "system" else None

    def chosen_messages(self) -> list[Message]:
        return [*self.prompt, Message("assistant", self.chosen)]

    def rejected_messages(self) -> list[Message]:
        return [*self.prompt, Message("assistant", self.rejected)]


@dataclass(frozen=True)
class SFTExample:
    messages: tuple[Message, ...]
    location: Location


Example = PreferenceExample | SFTExample
Stage = Literal["sft", "dpo"]


class Severity(StrEnum):
    ERROR = "error"  # the example cannot be used
    WARNING = "warning"  # usable, but the user should know


@dataclass(frozen=True)
class Problem:
    location: Location
    message: str
    severity: Severity = Severity.ERROR
    # A short machine-readable kind ("malformed_json", "empty_content", ...) for counting.
    kind: str = "invalid"

    def __str__(self) -> str:
        tag = "" if self.severity is Severity.ERROR else " (warning)"
        return f"{self.location}:{tag} {self.message}"


class ExampleError(ValueError):
    """Raised by a format parser for a record it cannot turn into an example."""

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class ParsedFile:
    """What reading and parsing one file gives: the usable examples and every problem, in order."""

    path: str
    format: str | None
    stage: str | None = None  # the stage of the detected (or forced) format: "dpo" or "sft"
    examples: list[Example] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    records: int = 0  # how many records the file held (usable or not)
