"""The JSON readers: JSON Lines (one record a line) and JSON (a list of records, or an object holding
one list). Each record keeps its line; a broken record costs that record, and reading goes on at the
next one where it can be found."""

from __future__ import annotations

import bisect
import re
from pathlib import Path

from prefkit.data import jsontext
from prefkit.data.examples import Location, Problem, Severity
from prefkit.data.jsontext import Decoded, JsonProblem
from prefkit.data.records import (
    BOM,
    UNREAD_REST,
    DataFileError,
    RawRecords,
    decode_whole,
    utf8_problem,
)


def _looks_cut_off(text: str, problem: JsonProblem) -> bool:
    # A file cut off mid-record fails at its very end or inside a string that never closes; a
    # last line broken elsewhere (",," in the middle) is ordinary malformed JSON.
    return (problem.pos is not None and problem.pos >= len(text.rstrip())) or problem.message.startswith(
        "Unterminated string"
    )


def _add_decoded(out: RawRecords, loc: Location, decoded: Decoded) -> None:
    """Keep a decoded record, unless a key given twice with different values makes it ambiguous."""
    conflicting = [d for d in decoded.duplicates if not d.same_value]
    if conflicting:
        out._bad(loc, str(conflicting[0]), "duplicate_key")
        return
    for duplicate in dict.fromkeys(decoded.duplicates):
        out.problems.append(Problem(loc, str(duplicate), Severity.WARNING, "duplicate_key"))
    out.records.append((loc, decoded.value))


def read_jsonl(path: Path, label: str) -> RawRecords:
    data = path.read_bytes()
    if data.startswith(BOM):
        data = data[len(BOM) :]
    out = RawRecords()
    lines = data.split(b"\n")
    # With a trailing newline the split ends with b""; without one the last line may be cut off.
    last_index = len(lines) - 1
    ends_cleanly = data.endswith(b"\n")
    for index, raw in enumerate(lines):
        lineno = index + 1
        raw = raw.removesuffix(b"\r")
        if not raw.strip():
            continue
        loc = Location(label, line=lineno)
        is_last_unterminated = index == last_index and not ends_cleanly
        # Each line is decoded on its own, so one bad byte costs one line, not the file.
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            if is_last_unterminated and exc.end >= len(raw) and "unexpected end" in exc.reason:
                out._bad(loc, "truncated last line: the file seems to have been cut off", "truncated")
            else:
                out._bad(loc, utf8_problem(raw, exc), "encoding")
            continue
        try:
            decoded = jsontext.decode(text, len(text) - len(text.lstrip()))
            if text[decoded.end :].strip():
                column = decoded.end + 1
                raise JsonProblem(f"extra data after the record (column {column}): one record a line", column)
        except JsonProblem as problem:
            if is_last_unterminated and _looks_cut_off(text, problem):
                out._bad(loc, "truncated last line: the file seems to have been cut off", "truncated")
            else:
                out._bad(loc, f"malformed JSON: {problem.message}", "malformed_json")
            continue
        _add_decoded(out, loc, decoded)
    return out


class _LineIndex:
    """Offset -> 1-based line number, by bisecting the newline positions once computed."""

    def __init__(self, text: str) -> None:
        self._newlines = [m.start() for m in re.finditer("\n", text)]

    def line(self, offset: int) -> int:
        # Lines before the offset = newlines strictly before it.
        return bisect.bisect_left(self._newlines, offset) + 1


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


# A record of a list that was broken mid-way starts again where an object closes, a comma follows and
# a new object opens; resynchronising there keeps the records after the damage.
_NEXT_RECORD = re.compile(r"\}\s*,?\s*(?=\{)")
_RESYNC_TRIES = 20


def _resync(text: str, pos: int) -> int | None:
    """The offset of the next record after damage at ``pos`` that decodes and is followed by ',' or ']'."""
    for tries, match in enumerate(_NEXT_RECORD.finditer(text, pos)):
        if tries >= _RESYNC_TRIES:
            return None
        start = match.end()
        try:
            end = jsontext.decode(text, start).end
        except JsonProblem:
            continue
        after = _skip_ws(text, end)
        if after < len(text) and text[after] in ",]":
            return start
    return None


def read_json(path: Path, label: str) -> RawRecords:
    text, bad_lines = decode_whole(path)
    lines = _LineIndex(text)
    out = RawRecords()
    pos = _skip_ws(text, 0)
    if pos == len(text):
        return out  # an empty file holds no records; whether that is a problem is for the caller

    if text[pos] == "{":
        pos = _find_single_list(text, pos, label, lines)
    elif text[pos] != "[":
        raise DataFileError(
            f"{label}:{lines.line(pos)}: expected a JSON list of records (or an object holding one list), "
            f"found {_shown(text[pos : pos + 20])}"
        )
    pos = _skip_ws(text, pos + 1)
    if pos < len(text) and text[pos] == "]":
        return out
    reader = _ListReader(text, label, lines, bad_lines, out)
    next_pos: int | None = pos
    while next_pos is not None:
        next_pos = reader.record(next_pos)
    return out


class _ListReader:
    """A JSON list read element by element, so that each record knows its line and a syntax error mid-list
    keeps every record before it -- and, where the next record can be found, every record after it."""

    def __init__(
        self, text: str, label: str, lines: _LineIndex, bad_lines: dict[int, str], out: RawRecords
    ) -> None:
        self.text, self.label, self.lines, self.bad_lines, self.out = text, label, lines, bad_lines, out

    def _at(self, pos: int) -> Location:
        return Location(self.label, line=self.lines.line(pos))

    def record(self, start: int) -> int | None:
        """Read the record at ``start``; the offset of the next one, or None where reading ends."""
        text, lines = self.text, self.lines
        try:
            decoded = jsontext.decode(text, start)
        except JsonProblem as problem:
            return self._damaged(start, problem)
        first, last = lines.line(start), lines.line(decoded.end - 1)
        spoiled = [n for n in range(first, last + 1) if n in self.bad_lines]
        if spoiled:
            self.out._bad(Location(self.label, line=spoiled[0]), self.bad_lines[spoiled[0]], "encoding")
        else:
            _add_decoded(self.out, Location(self.label, line=first), decoded)
        return self._after(_skip_ws(text, decoded.end))

    def _damaged(self, start: int, problem: JsonProblem) -> int | None:
        """A record that does not decode: the file cut off in it, or damage to read past if the next
        record can be found."""
        text = self.text
        if start >= len(text) or _looks_cut_off(text, problem):
            self.out._bad(
                self._at(start), "truncated: the file seems to have been cut off in this record", "truncated"
            )
            return None
        where = problem.pos if problem.pos is not None else start
        resumed = _resync(text, where)
        if resumed is None:
            self.out._bad(
                self._at(where),
                f"malformed JSON: {problem.message}; the rest of the file from here could not be read",
                UNREAD_REST,
            )
            return None
        self.out._bad(
            self._at(where),
            f"malformed JSON: {problem.message}; reading went on at line {self.lines.line(resumed)}",
            "malformed_json",
        )
        return resumed

    def _after(self, pos: int) -> int | None:
        """What follows a record at ``pos``: a comma and the next record, the list's end, or damage."""
        text = self.text
        if pos < len(text) and text[pos] == ",":
            return _skip_ws(text, pos + 1)
        if pos < len(text) and text[pos] == "]":
            return None
        if pos >= len(text):
            self.out._bad(
                self._at(pos),
                "truncated: the file ends without the list's closing ']'; it seems to have been cut off",
                "truncated",
            )
            return None
        # A missing comma ("} {"): the next record starts right here.
        resumed = pos if text[pos] == "{" else _resync(text, pos)
        found = _shown(text[pos])
        expected = f"malformed JSON: expected ',' or ']' after a record, found {found}"
        if resumed is None:
            message = f"{expected}; the rest of the file from here could not be read"
            self.out.problems.append(Problem(self._at(pos), message, kind=UNREAD_REST))
            return None
        message = f"{expected}; reading went on at line {self.lines.line(resumed)}"
        self.out.problems.append(Problem(self._at(pos), message, kind="malformed_json"))
        return resumed


def _shown(snippet: str) -> str:
    """A few characters of the file for a message, control characters escaped."""
    return repr(snippet)


def _find_single_list(text: str, pos: int, label: str, lines: _LineIndex) -> int:
    """For ``{"data": [...]}``: the offset of the one list-valued key's ``[``.

    Walks the object key by key (rather than ``json.loads``) to learn where each value starts.
    """
    list_starts: dict[str, int] = {}
    keys: list[str] = []
    try:
        pos = _skip_ws(text, pos + 1)
        while pos < len(text) and text[pos] != "}":
            key = jsontext.decode(text, pos)
            if not isinstance(key.value, str):
                raise JsonProblem("expected a key (a string in double quotes)", pos)
            pos = _skip_ws(text, key.end)
            if text[pos : pos + 1] != ":":
                raise JsonProblem("Expecting ':' delimiter", pos)
            pos = _skip_ws(text, pos + 1)
            value_start = pos
            try:
                value = jsontext.decode(text, pos)
            except JsonProblem:
                if text[value_start : value_start + 1] == "[" and not list_starts:
                    # A broken list is most likely the records: read it element by element so
                    # that the records before the damage survive and the damage gets its line.
                    return value_start
                raise
            keys.append(key.value)
            if isinstance(value.value, list):
                list_starts[key.value] = value_start
            pos = _skip_ws(text, value.end)
            if text[pos : pos + 1] == ",":
                pos = _skip_ws(text, pos + 1)
            elif text[pos : pos + 1] != "}":
                raise JsonProblem("Expecting ',' delimiter", pos)
        if pos >= len(text):
            raise JsonProblem("the object never closes: the file seems to have been cut off", pos)
    except JsonProblem as problem:
        at = problem.pos if problem.pos is not None else pos
        raise DataFileError(f"{label}:{lines.line(at)}: malformed JSON: {problem.message}") from None
    if len(list_starts) != 1:
        shown = ", ".join(repr(k[:40]) for k in keys[:10]) + (", ..." if len(keys) > 10 else "")
        raise DataFileError(
            f"{label}:{lines.line(pos)}: the top-level JSON object must hold exactly one list of records "
            f'(like {{"data": [...]}}); it has keys [{shown}] of which {len(list_starts)} hold lists'
        )
    return next(iter(list_starts.values()))
