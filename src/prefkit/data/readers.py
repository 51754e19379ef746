"""Raw records, each with the place it came from, from JSONL, JSON, Parquet and CSV files.

A reader only turns bytes into Python values; it knows nothing about prompts or roles (that is
``formats.py``). Each file type is one reader function in :data:`READERS` and one writer in
:data:`WRITERS` -- adding a file type means adding those two and their tests, nothing else.

Bad *content* never raises: an unreadable line becomes a :class:`Problem` at its line and the
other lines are still read. Only whole-file failures (missing file, unknown extension, a Parquet
file pyarrow cannot open) raise :class:`DataFileError`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefkit.builtin import resolve_data_path
from prefkit.data.examples import Location
from prefkit.data.json_readers import read_json, read_jsonl
from prefkit.data.records import (
    UNREAD_REST,
    DataFileError,
    DataPathError,
    RawRecords,
    decode_whole,
)

__all__ = [
    "READERS",
    "UNREAD_REST",
    "WRITERS",
    "DataFileError",
    "DataPathError",
    "RawRecords",
    "read_records",
    "supported_extensions",
    "write_records",
]

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
    text, bad_lines = decode_whole(path)
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
    ".jsonl": read_jsonl,
    ".ndjson": read_jsonl,
    ".json": read_json,
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
