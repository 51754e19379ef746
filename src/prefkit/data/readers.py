"""Raw records, each with the place it came from, from JSONL, JSON, Parquet and CSV files.

A reader only turns bytes into Python values; it knows nothing about prompts or roles (that is
``formats.py``). Each file type is one reader function in :data:`READERS` and one writer in
:data:`WRITERS` -- adding a file type means adding those two and their tests, nothing else.

Bad *content* never raises: an unreadable line becomes a :class:`Problem` at its line and the
other lines are still read. Only whole-file failures (missing file, unknown extension, a Parquet
file pyarrow cannot open) raise :class:`DataFileError`.
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefkit.builtin import resolve_data_path
from prefkit.data import jsontext
from prefkit.data.examples import Location, Problem, Severity
from prefkit.data.jsontext import Decoded, JsonProblem
from prefkit.errors import BadDataError, PrefkitError

_BOM = b"\xef\xbb\xbf"


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


Reader = Callable[[Path, str], RawRecords]


def read_records(path: str | os.PathLike[str], *, file_label: str | None = None) -> RawRecords:
    """Read every record of ``path``; the reader is chosen by the file's extension.

    ``file_label`` is what locations call the file (default: the path as given), so a caller can
    report ``train.jsonl:12`` rather than a long temporary path.
    """
    p = resolve_data_path(path)  # `builtin:NAME` -> the bundled file
    label = file_label if file_label is not None else str(path)
    reader = READERS.get(p.suffix.lower())
    if reader is None:
        raise DataPathError(
            f"{label}: unsupported file type {p.suffix or '(no extension)'!r}; "
            f"supported: {', '.join(sorted(READERS))}"
        )
    if not p.exists():
        raise DataPathError(f"{label}: no such file")
    if p.is_dir():
        raise DataPathError(f"{label}: is a folder, not a data file")
    if not p.is_file():  # a FIFO or a device such as /dev/zero would be read forever
        raise DataPathError(f"{label}: is not a regular file")
    try:
        return reader(p, label)
    except OSError as exc:  # permissions, I/O errors: the file as a whole is unusable
        raise DataPathError(f"{label}: cannot read the file: {exc.strerror or exc}") from exc


def supported_extensions() -> list[str]:
    return sorted(READERS)


# --------------------------------------------------------------------------------------------- JSONL


def _utf8_problem(raw: bytes, exc: UnicodeDecodeError) -> str:
    # The prefix before the bad byte decodes cleanly (it is where decoding stopped), so its length
    # in characters is the column an editor shows.
    column = len(raw[: exc.start].decode("utf-8")) + 1
    return f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {column})"


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


def _read_jsonl(path: Path, label: str) -> RawRecords:
    data = path.read_bytes()
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
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
                out._bad(loc, _utf8_problem(raw, exc), "encoding")
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


# ---------------------------------------------------------------------------------------------- JSON


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


def _bad_utf8_lines(data: bytes) -> dict[int, str]:
    """Line number -> message for every line holding bytes that are not UTF-8."""
    bad: dict[int, str] = {}
    for index, raw in enumerate(data.split(b"\n")):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad[index + 1] = _utf8_problem(raw.removesuffix(b"\r"), exc)
    return bad


def _decode_whole(path: Path) -> tuple[str, dict[int, str]]:
    data = path.read_bytes()
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    try:
        return data.decode("utf-8"), {}
    except UnicodeDecodeError:
        # Keep going with replacement characters; the records that span a bad line are dropped
        # with a problem at that line, the rest of the file stays usable.
        return data.decode("utf-8", errors="replace"), _bad_utf8_lines(data)


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


def _read_json(path: Path, label: str) -> RawRecords:
    text, bad_lines = _decode_whole(path)
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

    # Element by element, so that each record knows its line and a syntax error mid-list keeps
    # every record before it -- and, where the next record can be found, every record after it.
    pos = _skip_ws(text, pos + 1)
    if pos < len(text) and text[pos] == "]":
        return out
    while True:
        start = pos
        try:
            decoded = jsontext.decode(text, pos)
        except JsonProblem as problem:
            if start >= len(text) or _looks_cut_off(text, problem):
                out._bad(
                    Location(label, line=lines.line(start)),
                    "truncated: the file seems to have been cut off in this record",
                    "truncated",
                )
                return out
            where = problem.pos if problem.pos is not None else start
            pos = _resync(text, where) or -1
            if pos < 0:
                out._bad(
                    Location(label, line=lines.line(where)),
                    f"malformed JSON: {problem.message}; the rest of the file from here could not be read",
                    UNREAD_REST,
                )
                return out
            out._bad(
                Location(label, line=lines.line(where)),
                f"malformed JSON: {problem.message}; reading went on at line {lines.line(pos)}",
                "malformed_json",
            )
            continue
        first, last = lines.line(start), lines.line(decoded.end - 1)
        spoiled = [n for n in range(first, last + 1) if n in bad_lines]
        if spoiled:
            out._bad(Location(label, line=spoiled[0]), bad_lines[spoiled[0]], "encoding")
        else:
            _add_decoded(out, Location(label, line=first), decoded)
        pos = _skip_ws(text, decoded.end)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
            continue
        if pos < len(text) and text[pos] == "]":
            break
        if pos >= len(text):
            out._bad(
                Location(label, line=lines.line(pos)),
                "truncated: the file ends without the list's closing ']'; it seems to have been cut off",
                "truncated",
            )
            return out
        # A missing comma ("} {"): the next record starts right here.
        resumed = pos if text[pos] == "{" else _resync(text, pos)
        found = _shown(text[pos])
        if resumed is None:
            out.problems.append(
                Problem(
                    Location(label, line=lines.line(pos)),
                    f"malformed JSON: expected ',' or ']' after a record, found {found}; "
                    "the rest of the file from here could not be read",
                    kind=UNREAD_REST,
                )
            )
            return out
        out.problems.append(
            Problem(
                Location(label, line=lines.line(pos)),
                f"malformed JSON: expected ',' or ']' after a record, found {found}; reading went on "
                f"at line {lines.line(resumed)}",
                kind="malformed_json",
            )
        )
        pos = resumed
    return out


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


# ----------------------------------------------------------------------------------------------- CSV


class _FieldSizeLimit:
    """Lift the csv module's 128 KiB per-cell limit while reading (it is process-wide state)."""

    def __enter__(self) -> None:
        self._old = csv.field_size_limit()
        csv.field_size_limit(2**31 - 1)

    def __exit__(self, *exc: object) -> None:
        csv.field_size_limit(self._old)


def _check_header(header: list[str], label: str, line: int) -> None:
    seen: dict[str, int] = {}
    for number, name in enumerate(header, start=1):
        if name in seen:
            raise DataFileError(
                f"{label}:{line}: header: column {name[:60]!r} appears twice (columns {seen[name]} and "
                f"{number}); every row would keep only one of the two values: rename one"
            )
        seen[name] = number


def _read_csv(path: Path, label: str) -> RawRecords:
    text, bad_lines = _decode_whole(path)
    out = RawRecords()
    # newline="" so that quoted cells keep their own newlines and line_num counts physical lines.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    end = 0
    with _FieldSizeLimit():
        while True:
            start = end + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                end = reader.line_num
                if "unexpected end of data" in str(exc):
                    # A quote that never closes swallows every line after it into one cell.
                    out._bad(
                        Location(label, line=start),
                        f"malformed CSV: a quoted cell that starts on this line never closes, so lines "
                        f"{start}-{end} (the rest of the file) could not be read",
                        UNREAD_REST,
                    )
                    break
                if header is None:
                    raise DataFileError(f"{label}:{start}: header row: malformed CSV: {exc}") from None
                out._bad(Location(label, line=start), f"malformed CSV: {exc}", "malformed_csv")
                continue
            end = reader.line_num
            if not row:  # a blank line
                continue
            loc = Location(label, line=start)
            spoiled = [n for n in range(start, end + 1) if n in bad_lines]
            if header is None:
                if spoiled:
                    raise DataFileError(f"{label}:{spoiled[0]}: header row: {bad_lines[spoiled[0]]}")
                _check_header(row, label, start)
                header = row
                continue
            if spoiled:
                out._bad(Location(label, line=spoiled[0]), bad_lines[spoiled[0]], "encoding")
            elif len(row) != len(header):
                out._bad(
                    loc,
                    f"malformed CSV: the row has {len(row)} fields but the header has {len(header)}",
                    "malformed_csv",
                )
            else:
                out.records.append((loc, dict(zip(header, row, strict=True))))
    return out


# ------------------------------------------------------------------------------------------- Parquet


def _read_parquet(path: Path, label: str) -> RawRecords:
    import pyarrow as pa  # imported here: only Parquet users pay for it
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataFileError(f"{label}: cannot read as Parquet: {exc}") from exc
    out = RawRecords()
    out.records = [(Location(label, row=i), row) for i, row in enumerate(rows, start=1)]
    return out


READERS: dict[str, Reader] = {
    ".jsonl": _read_jsonl,
    ".ndjson": _read_jsonl,
    ".json": _read_json,
    ".csv": _read_csv,
    ".parquet": _read_parquet,
}


# ----------------------------------------------------------------------------------------- writing

Writer = Callable[[list[dict[str, Any]], Path], None]


def _write_jsonl(records: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def _write_json(records: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        json.dump(records, f, ensure_ascii=False, indent=2)
        f.write("\n")


def _all_keys(records: list[dict[str, Any]]) -> list[str]:
    keys: dict[str, None] = {}
    for record in records:
        keys.update(dict.fromkeys(record))
    return list(keys)


def _write_csv(records: list[dict[str, Any]], path: Path) -> None:
    keys = _all_keys(records)
    for number, record in enumerate(records, start=1):
        for key, value in record.items():
            if value is not None and not isinstance(value, str):
                raise DataFileError(
                    f"{path}: cannot write CSV: record {number} has {key!r} as "
                    f"{type(value).__name__}, and CSV cells hold only text; "
                    "write .jsonl, .json or .parquet instead"
                )
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, restval="")
        writer.writeheader()
        writer.writerows(records)


def _write_parquet(records: list[dict[str, Any]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # pyarrow takes the columns from the first row only; give every row every key.
    keys = _all_keys(records)
    rows = [{key: record.get(key) for key in keys} for record in records]
    pq.write_table(pa.Table.from_pylist(rows), path)


WRITERS: dict[str, Writer] = {
    ".jsonl": _write_jsonl,
    ".ndjson": _write_jsonl,
    ".json": _write_json,
    ".csv": _write_csv,
    ".parquet": _write_parquet,
}


def write_records(records: list[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Write ``records`` to ``path`` by its extension, UTF-8, non-ASCII kept as is.

    Written to a temporary file next to ``path`` and renamed into place, so a failure half way
    (a value CSV cannot hold, a full disk) never leaves a half-written or clobbered file.
    """
    p = Path(path)
    writer = WRITERS.get(p.suffix.lower())
    if writer is None:
        raise DataFileError(
            f"{p}: cannot write {p.suffix or '(no extension)'!r} files; supported: "
            f"{', '.join(sorted(WRITERS))}"
        )
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{p.name}.", suffix=p.suffix, dir=p.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer(records, tmp)
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
