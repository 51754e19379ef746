"""Convert a data file from one shape to another (``prefkit data convert``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from prefkit.data.examples import Example, ExampleError, PreferenceExample, Problem, SFTExample
from prefkit.data.formats import Format, find_formats, get_format, parse_file
from prefkit.data.readers import write_records
from prefkit.errors import PrefkitError

_SHOWN = 20  # problems listed in an error message; the rest are counted


class ConversionError(PrefkitError):
    """The file cannot be converted as asked; nothing was written."""


@dataclass
class ConvertResult:
    src: Path
    dst: Path
    source_format: str  # "dpo:alpaca", ...
    target_format: str
    written: int
    problems: list[Problem] = field(default_factory=list)  # records skipped (only with skip_bad)


def _listing(problems: list[Problem]) -> str:
    lines = [f"  {p}" for p in problems[:_SHOWN]]
    if len(problems) > _SHOWN:
        lines.append(f"  ... and {len(problems) - _SHOWN} more")
    return "\n".join(lines)


def _target(to: str, stage: str | None, source_stage: str) -> Format:
    if stage is None and len(find_formats(to, None)) > 1:
        stage = source_stage  # "alpaca"/"sharegpt" exist for both stages: stay in the source's
    return get_format(to, stage)


def _as_stage(example: Example, target: Format) -> Example:
    if target.stage == "sft" and isinstance(example, PreferenceExample):
        return SFTExample(tuple(example.chosen_messages()), example.location)
    return example


def convert_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    to: str,
    *,
    stage: str | None = None,
    source_format: str | None = None,
    skip_bad: bool = False,
    overwrite: bool = False,
    columns: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
) -> ConvertResult:
    """Convert ``src`` to format ``to``, written to ``dst`` (.jsonl/.json/.parquet/.csv by extension).

    Any shape converts to any other of the same stage. A preference file may also be converted to
    an SFT shape: each example becomes its prompt followed by the *chosen* reply (the rejected one
    is dropped). SFT -> preference is refused -- there is no rejected reply to invent.

    ``stage`` is the target's stage, needed only when ``to`` is a name both stages use (alpaca,
    sharegpt) and the target stage differs from the source's. ``source_format`` forces the input's
    format instead of detecting it.

    Records that cannot be read or expressed in the target make this raise
    :class:`ConversionError` listing them as ``file:line: what``, unless ``skip_bad`` -- then they
    are left out and returned in ``ConvertResult.problems``. An existing ``dst`` is never replaced
    unless ``overwrite``; the file is written whole and renamed into place, so a failure loses
    nothing.
    """
    src_path, dst_path = Path(src), Path(dst)
    if dst_path.exists() and not overwrite:
        raise ConversionError(f"{dst_path} already exists; pass overwrite=True (--force) to replace it")

    parsed = parse_file(src_path, format=source_format, columns=columns, tags=tags)
    if parsed.stage is None:  # nothing in the file could be told apart as records
        if parsed.problems:
            raise ConversionError(f"{src_path}: no usable records:\n{_listing(parsed.problems)}")
        raise ConversionError(f"{src_path}: the file holds no records")
    source = get_format(parsed.format or "", parsed.stage)
    target = _target(to, stage, parsed.stage)
    if source.stage == "sft" and target.stage == "dpo":
        raise ConversionError(
            f"cannot convert {src_path} ({source.id}) to {target.id}: an SFT file has no rejected "
            "replies to make preference pairs from"
        )

    problems = list(parsed.problems)
    records = []
    for example in parsed.examples:
        try:
            records.append(target.to_record(_as_stage(example, target)))
        except ExampleError as exc:
            problems.append(Problem(example.location, f"cannot write as {target.id}: {exc}", kind=exc.kind))
    if problems and not skip_bad:
        raise ConversionError(
            f"{src_path}: {len(problems)} record(s) cannot be converted (skip_bad / --skip-bad leaves "
            f"them out):\n{_listing(problems)}"
        )
    write_records(records, dst_path)
    return ConvertResult(src_path, dst_path, source.id, target.id, len(records), problems)
