"""Whole files: parse every record of a file in its detected (or forced) format; write examples back."""

from __future__ import annotations

import difflib
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

from prefkit.data.examples import (
    Example,
    ExampleError,
    Location,
    ParsedFile,
    PreferenceExample,
    Problem,
    Severity,
)
from prefkit.data.formats.base import Format, FormatError
from prefkit.data.formats.columns import apply_columns
from prefkit.data.formats.fields import decode_cell, invisible, type_name, visible_text
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
    # The record's own keys that `columns` took away: their target now comes from another column.
    sources = set(columns.values()) if isinstance(columns, Mapping) else set()
    dropped = {
        loc: [k for k in rec if k not in out and k not in sources]
        for (loc, rec), (_, out) in zip(raw.records, mapped, strict=True)
        if isinstance(rec, dict) and isinstance(out, dict) and columns
    }
    dicts = [(loc, rec) for loc, rec in mapped if isinstance(rec, dict)]
    fmt: Format | None = forced
    if fmt is None and dicts:
        # "alpaca" with no stage: the records say which of the two it is.
        pool = candidates or [f for f in FORMATS if stage is None or f.stage == stage]
        fmt = detect([rec for _, rec in dicts], pool, label, first_at=str(dicts[0][0]))
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
    if fmt is not None:
        result.problems += unread_key_warnings(dicts, fmt)
        result.problems += ignored_system_warnings(dicts, fmt, dropped)
    # Reader problems and parse problems interleave by position, as a user reads the file.
    result.problems.sort(key=lambda p: (p.location.line or 0, p.location.row or 0))
    return result


def unread_key_warnings(records: list[tuple[Location, dict]], fmt: Format) -> list[Problem]:
    """One warning per key that ``fmt`` does not read but that looks like one it does (``sytem`` for
    ``system``, ``chosen`` with a zero-width space): such a value would otherwise be dropped silently.
    Other extra keys (``id``, ``source``) are a dataset's own business and pass without a word."""
    known = (*fmt.required_keys, *fmt.optional_keys)
    guesses: dict[str, str | None] = {}
    first: dict[str, Location] = {}
    counts: Counter[str] = Counter()
    for loc, record in records:
        for key in record:
            if not isinstance(key, str) or key in known:
                continue
            if key not in guesses:
                near = difflib.get_close_matches(visible_text(key).lower()[:100], known, n=1, cutoff=0.8)
                guesses[key] = near[0] if near else None
            # A near name beside the real one (`chosen_x` next to `chosen`) is a field of its own.
            if guesses[key] is not None and guesses[key] not in record:
                first.setdefault(key, loc)
                counts[key] += 1
    problems = []
    for key, loc in first.items():
        hidden = invisible(key)
        why = f"it has {', '.join(hidden)} in it" if hidden else "a misspelling?"
        problems.append(
            Problem(
                loc,
                f"key {key[:60]!r} is not one format {fmt.stage} {fmt.name} reads, so its value is ignored "
                f"({counts[key]} record(s) have it) -- did you mean {guesses[key]!r}? ({why})",
                Severity.WARNING,
                "unread_key",
            )
        )
    return problems


_MESSAGE_FIELDS = ("role", "content", "from", "value")


def ignored_system_warnings(
    records: list[tuple[Location, dict]], fmt: Format, dropped: Mapping[Location, list[str]]
) -> list[Problem]:
    """One warning per way a system prompt the file gives is not read, so the examples train without it:

    * a ``system`` key inside a message object (``{"role": "user", "content": ..., "system": ...}``): a
      message is role/content or from/value, and its other keys are not read;
    * the record's own ``system`` key when ``columns`` maps system to another column the record lacks.

    Every format reads the record's ``system`` key (null and "" mean none); its misspellings are
    :func:`unread_key_warnings`'."""
    message_keys = [key for key in fmt.required_keys + fmt.optional_keys if key != "system"]
    like_system: dict[str, bool] = {}  # a dataset repeats its few message keys in every record
    first: dict[tuple[str, str], Location] = {}
    counts: Counter[tuple[str, str]] = Counter()
    for loc, record in records:
        found: set[tuple[str, str]] = set()
        for field in message_keys:
            value = decode_cell(record.get(field))
            for message in value if isinstance(value, list) else [value]:
                if not isinstance(message, dict):
                    continue
                for key in message:
                    if not isinstance(key, str) or key in _MESSAGE_FIELDS:
                        continue
                    if key not in like_system:
                        near = difflib.get_close_matches(
                            visible_text(key).lower()[:100], ["system"], cutoff=0.8
                        )
                        like_system[key] = bool(near)
                    if like_system[key]:
                        found.add((field, key))
        if "system" in fmt.optional_keys and "system" in dropped.get(loc, []):
            found.add(("", "system"))
        for finding in found:
            first.setdefault(finding, loc)
            counts[finding] += 1
    problems = []
    for (field, key), loc in first.items():
        if field:
            message = (
                f"key {key[:60]!r} inside a message of {field!r} is not read (a message is role/content or "
                f"from/value), so its system prompt is ignored ({counts[field, key]} record(s) have one): "
                "give it as the record's 'system' key or as a leading system message"
            )
        else:
            message = (
                f"the record's 'system' key is not read: `columns` takes system from another column, which "
                f"{counts[field, key]} record(s) lack, so they train without a system prompt"
            )
        problems.append(Problem(loc, message, Severity.WARNING, "ignored_system"))
    return problems


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
