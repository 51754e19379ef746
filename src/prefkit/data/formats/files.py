"""Whole files: parse every record of a file in its detected (or forced) format; write examples back."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from prefkit.data.examples import (
    Example,
    ExampleError,
    ParsedFile,
    PreferenceExample,
    Problem,
)
from prefkit.data.formats.base import Format, FormatError
from prefkit.data.formats.columns import apply_columns
from prefkit.data.formats.fields import type_name
from prefkit.data.formats.registry import FORMATS, check_stage, detect, find_formats, get_format
from prefkit.data.readers import read_records, write_records


def _not_object(value: object) -> str:
    return f"expected a JSON object (a record with keys), got {type_name(value)}"


def parse_file(
    path: str | os.PathLike[str],
    *,
    stage: str | None = None,
    format: str | Format | None = None,
    columns: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
    file_label: str | None = None,
) -> ParsedFile:
    """Read ``path``, detect (or force) its format, and parse every record.

    Every record that cannot be used becomes a :class:`Problem` at its line/row; the rest become
    examples. Raises (``DataFileError``/``FormatError``) only for whole-file failures: unreadable
    file, unknown format name, or records whose format cannot be told.
    """
    check_stage(stage)
    raw = read_records(path, file_label=file_label)
    label = file_label if file_label is not None else str(path)
    result = ParsedFile(path=str(path), format=None, problems=list(raw.problems), records=raw.total)

    forced: Format | None = None
    candidates: list[Format] = []
    if format is not None:
        candidates = [format] if isinstance(format, Format) else find_formats(format, stage)
        if not candidates:
            get_format(format, stage)  # raises with the did-you-mean message
        if len(candidates) == 1:
            forced = candidates[0]

    mapped = [
        (loc, apply_columns(rec, columns, tags, format=forced) if isinstance(rec, dict) else rec)
        for loc, rec in raw.records
    ]
    dicts = [rec for _, rec in mapped if isinstance(rec, dict)]
    fmt: Format | None = forced
    if fmt is None and dicts:
        # "alpaca" with no stage: the records say which of the two it is.
        pool = candidates or [f for f in FORMATS if stage is None or f.stage == stage]
        fmt = detect(dicts, pool, label)
    if fmt is not None:
        result.format, result.stage = fmt.name, fmt.stage

    for loc, rec in mapped:
        if not isinstance(rec, dict):
            result.problems.append(Problem(loc, _not_object(rec), kind="not_object"))
            continue
        assert fmt is not None
        try:
            result.examples.append(fmt.parse(rec, loc))
        except ExampleError as exc:
            result.problems.append(Problem(loc, str(exc), kind=exc.kind))
    # Reader problems and parse problems interleave by position, as a user reads the file.
    result.problems.sort(key=lambda p: (p.location.line or 0, p.location.row or 0))
    return result


def write_examples(
    examples: Iterable[Example],
    path: str | os.PathLike[str],
    format: str | Format,
    *,
    stage: str | None = None,
) -> int:
    """Write ``examples`` in ``format`` to ``path`` (.jsonl/.json/.parquet/.csv by extension).

    Raises :class:`FormatError` naming the example's location if one cannot be expressed in the
    format (a multi-turn prompt as prompt-text), and ``DataFileError`` for CSV when a field is not
    text. Nothing is written in either case. Returns how many examples were written.
    """
    examples = list(examples)
    if isinstance(format, str) and stage is None and len(find_formats(format, None)) > 1 and examples:
        # "alpaca"/"sharegpt" exist for both stages: the examples themselves say which is meant.
        stage = "dpo" if isinstance(examples[0], PreferenceExample) else "sft"
    fmt = get_format(format, stage)
    records = []
    for example in examples:
        try:
            records.append(fmt.to_record(example))
        except ExampleError as exc:
            raise FormatError(f"{example.location}: cannot write as {fmt.id}: {exc}") from exc
    write_records(records, Path(path))
    return len(records)
