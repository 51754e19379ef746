"""``metrics.jsonl`` read incrementally, as the page polls a run that is training.

A cursor (``INODE-OFFSET-LINE``) says how far a client has read. Only complete lines are returned: the
line a trainer is writing at this moment (no newline yet) waits for the next poll, so a half-written
record is never shown nor reported as broken. A complete line that is not a JSON object is left out and
named (``metrics.jsonl:LINE: ...``). When the file is replaced -- a resumed run rewrites it without the
records logged after its checkpoint -- its inode changes (or it shrinks), and the answer says ``reset``:
the client drops what it had and takes the file again from the start. A cursor that is not of that
shape (three runs of ASCII digits) came from no answer of ours: :class:`BadCursor`, a 400.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefkit.ui.files import contained, finite

MAX_CHUNK = 4 << 20  # bytes per answer; ``more`` says there is more to fetch at once
TAIL_BYTES = 64 << 10  # what the runs list reads from the end of each run's metrics.jsonl


@dataclass
class MetricsChunk:
    records: list[dict[str, Any]]
    cursor: str
    reset: bool = False  # the file was replaced or cut: drop earlier records
    more: bool = False  # complete lines beyond this chunk are waiting
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "cursor": self.cursor,
            "reset": self.reset,
            "more": self.more,
            "problems": self.problems,
        }


# [0-9], not \d nor str.isdigit: those take '²' or '٣', which int() then refuses (a 500, before).
_CURSOR = re.compile(r"([0-9]{1,29})-([0-9]{1,29})-([0-9]{1,29})")


class BadCursor(ValueError):
    """A ``since`` cursor that is not ``INODE-OFFSET-LINE`` in ASCII digits."""


def _parse_cursor(cursor: str | None) -> tuple[int, int, int] | None:
    """(inode, offset, line) of ``cursor``; None for no cursor (None or ""); BadCursor if malformed."""
    if not cursor:
        return None
    match = _CURSOR.fullmatch(cursor)
    if match is None:
        raise BadCursor(f"since {cursor[:40]!r} is not a cursor this server gave (INODE-OFFSET-LINE)")
    ino, offset, line = (int(p) for p in match.groups())
    return ino, offset, line


def _records(lines: list[bytes], first_line: int, name: str) -> tuple[list[dict[str, Any]], list[str]]:
    records, problems = [], []
    for number, raw in enumerate(lines, start=first_line):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except (ValueError, RecursionError):
            problems.append(f"{name}:{number}: not a JSON record; left out")
            continue
        if not isinstance(record, dict):
            problems.append(f"{name}:{number}: a JSON {type(record).__name__}, not a record; left out")
            continue
        records.append(finite(record))
    return records, problems


def read_since(root: Path, path: Path, cursor: str | None) -> MetricsChunk:
    """The records after ``cursor`` (from the start when it is None or does not fit the file -- the file
    was replaced); :class:`BadCursor` when it is not a cursor at all."""
    parsed = _parse_cursor(cursor)
    real = contained(root, path)
    if real is None:
        problems = (
            [] if not path.is_symlink() else [f"{path.name}: leads outside the runs directory; not read"]
        )
        return MetricsChunk([], "", reset=bool(cursor), problems=problems)
    try:
        with real.open("rb") as f:
            stat = os.fstat(f.fileno())
            reset = False
            if parsed is None or parsed[0] != stat.st_ino or parsed[1] > stat.st_size:
                reset = cursor is not None and cursor != ""
                parsed = (stat.st_ino, 0, 0)
            ino, offset, line = parsed
            f.seek(offset)
            data = f.read(MAX_CHUNK)
    except OSError as err:
        return MetricsChunk([], cursor or "", problems=[f"{path.name}: cannot be read ({err.strerror})"])
    end = data.rfind(b"\n")
    if end < 0:
        if len(data) < MAX_CHUNK:  # only a line being written: wait for it
            return MetricsChunk([], f"{ino}-{offset}-{line}", reset)
        # A single line longer than a whole chunk: no trainer writes that. Step over this part of it; the
        # rest of the line is then reported as broken with its line number.
        return MetricsChunk([], f"{ino}-{offset + len(data)}-{line}", reset, more=True)
    lines = data[:end].split(b"\n")
    records, problems = _records(lines, line + 1, path.name)
    offset += end + 1
    return MetricsChunk(
        records,
        f"{ino}-{offset}-{line + len(lines)}",
        reset,
        more=len(data) == MAX_CHUNK and offset < stat.st_size,
        problems=problems,
    )


def tail(root: Path, path: Path) -> list[dict[str, Any]]:
    """The last complete records of the file (from its last ``TAIL_BYTES``), oldest first; [] on any
    trouble. Enough for the runs list's latest step and values without reading a long run's history."""
    real = contained(root, path)
    if real is None:
        return []
    try:
        with real.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - TAIL_BYTES))
            data = f.read(TAIL_BYTES)
    except OSError:
        return []
    lines = data.split(b"\n")
    lines = lines[1:-1] if size > TAIL_BYTES else lines[:-1]  # a cut first line; the unfinished last one
    return _records(lines, 0, path.name)[0]


def head(root: Path, path: Path, count: int) -> list[dict[str, Any]]:
    """The first ``count`` records of a JSONL file (broken lines left out); [] on any trouble."""
    real = contained(root, path)
    if real is None:
        return []
    lines: list[bytes] = []
    try:
        with real.open("rb") as f:
            while len(lines) < count * 4 and (raw := f.readline(1 << 20)):
                lines.append(raw)
    except OSError:
        return []
    return _records(lines, 1, path.name)[0][:count]
