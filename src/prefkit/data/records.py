"""What a reader returns (the records of one file with their places, and the problems met reading it),
the errors for a whole file, and the byte-level helpers every text reader shares."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefkit.data.examples import Location, Problem
from prefkit.errors import BadDataError, PrefkitError

BOM = b"\xef\xbb\xbf"


class DataFileError(BadDataError):
    """A whole file cannot be read (not Parquet at all, a JSON top level that holds no records, ...)."""


class DataPathError(DataFileError):
    """The path itself is wrong: no such file, a folder, an extension prefkit does not read."""

    exit_code = PrefkitError.exit_code


# The kind of a problem after which the rest of a file could not be read: the records it hides are
# unknown, so `on_bad_example: skip` cannot skip them -- training refuses such a file.
UNREAD_REST = "unread_rest"


@dataclass
class RawRecords:
    """The records of one file, in order, and the problems met while reading it.

    Unpacks as ``records, problems = read_records(path)``.
    """

    records: list[tuple[Location, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    # Records that were in the file but could not be decoded at all (each has a problem above);
    # kept so that "N records" counts what the user sees in the file, not what survived.
    unreadable: int = 0

    @property
    def total(self) -> int:
        return len(self.records) + self.unreadable

    def __iter__(self) -> Iterator[Any]:
        yield self.records
        yield self.problems

    def _bad(self, location: Location, message: str, kind: str) -> None:
        self.problems.append(Problem(location, message, kind=kind))
        self.unreadable += 1


def utf8_problem(raw: bytes, exc: UnicodeDecodeError) -> str:
    # The prefix before the bad byte decodes cleanly (it is where decoding stopped), so its length
    # in characters is the column an editor shows.
    column = len(raw[: exc.start].decode("utf-8")) + 1
    return f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {column})"


def bad_utf8_lines(data: bytes) -> dict[int, str]:
    """Line number -> message for every line holding bytes that are not UTF-8."""
    bad: dict[int, str] = {}
    for index, raw in enumerate(data.split(b"\n")):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad[index + 1] = utf8_problem(raw.removesuffix(b"\r"), exc)
    return bad


def decode_whole(path: Path) -> tuple[str, dict[int, str]]:
    data = path.read_bytes()
    if data.startswith(BOM):
        data = data[len(BOM) :]
    try:
        return data.decode("utf-8"), {}
    except UnicodeDecodeError:
        # Keep going with replacement characters; the records that span a bad line are dropped
        # with a problem at that line, the rest of the file stays usable.
        return data.decode("utf-8", errors="replace"), bad_utf8_lines(data)
