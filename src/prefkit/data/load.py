"""From a Config to training-ready datasets: resolve sources, parse, check, split, tokenise.

The one place the data layer is wired together; `prefkit train` and `prefkit data check` both come
through here, so training refuses exactly what `data check` reports.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefkit.data.examples import (
    Example,
    Location,
    Message,
    ParsedFile,
    PreferenceExample,
    Problem,
    Severity,
    SFTExample,
)
from prefkit.data.formats import parse_file
from prefkit.data.readers import UNREAD_REST, supported_extensions
from prefkit.data.reuse import shareable
from prefkit.data.sources import DataError, Source, data_files, sources, warn_eval_overlap
from prefkit.data.tokenize import ChatEncoder
from prefkit.data.validate import DataReport, check_files, usable_examples

if TYPE_CHECKING:
    from datasets import Dataset

    from prefkit.config import Config

logger = logging.getLogger(__name__)


def parse_sources(found: list[Source], stage: str) -> list[ParsedFile]:
    """Parse every source for ``stage``. For SFT, a file of preference pairs is accepted too: SFT then
    trains on prompt + chosen (the usual first stage before preference optimisation on the same data)."""
    parsed = []
    for s in found:
        detect_any = stage == "sft" and s.format is None
        f = parse_file(
            s.path, stage=None if detect_any else stage, format=s.format, columns=s.columns, tags=s.tags
        )
        if stage == "sft" and f.stage == "dpo":
            logger.info("%s holds preference pairs: SFT trains on each prompt and its chosen reply", s.path)
            f = dataclasses.replace(f, stage="sft", examples=[_chosen_as_sft(e) for e in f.examples])
        parsed.append(f)
    return parsed


def _chosen_as_sft(example: Example) -> Example:
    if isinstance(example, PreferenceExample):
        return SFTExample((*example.prompt, Message("assistant", example.chosen)), example.location)
    return example


def split_examples(
    examples: list[Example], val_size: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """A seeded split into (train, eval). Examples sharing a prompt stay on one side, so no eval prompt is
    ever trained on. ``val_size`` < 1 is a fraction of the examples, >= 1 a count."""
    if not val_size:
        return examples, []
    wanted = math.ceil(val_size * len(examples)) if val_size < 1 else int(val_size)
    groups: dict[Any, list[int]] = {}
    for i, example in enumerate(examples):
        groups.setdefault(_prompt_key(example), []).append(i)
    order = list(groups.values())
    random.Random(seed).shuffle(order)
    eval_idx: set[int] = set()
    for group in order:
        if len(eval_idx) >= wanted:
            break
        eval_idx.update(group)
    if len(eval_idx) >= len(examples):
        raise DataError(f"val_size {val_size} leaves no training examples (there are {len(examples)})")
    train = [e for i, e in enumerate(examples) if i not in eval_idx]
    evals = [e for i, e in enumerate(examples) if i in eval_idx]
    return train, evals


def _prompt_key(example: Example) -> tuple:
    if isinstance(example, PreferenceExample):
        return example.prompt
    return tuple(m for m in example.messages if m.role != "assistant")


def _file_level(location: Location) -> bool:
    return location.line is None and location.row is None


def first_records(parsed: ParsedFile, limit: int | None) -> ParsedFile:
    """The file cut to its first ``limit`` records (usable or not), with their problems."""
    if not limit or parsed.records <= limit:
        return parsed
    places = sorted(
        {e.location for e in parsed.examples}
        | {p.location for p in parsed.problems if not _file_level(p.location)},
        key=lambda loc: (loc.line or 0, loc.row or 0),
    )
    kept = set(places[:limit])
    return dataclasses.replace(
        parsed,
        examples=[e for e in parsed.examples if e.location in kept],
        problems=[p for p in parsed.problems if p.location in kept or _file_level(p.location)],
        records=min(parsed.records, limit),
    )


def format_report_problems(report: DataReport, limit: int = 50) -> str:
    lines = [str(p) for p in report.errors[:limit]]
    if len(report.errors) > limit:
        lines.append(f"... and {len(report.errors) - limit} more (run `prefkit data check` for all)")
    return "\n".join(lines)


@dataclass
class PreparedData:
    train_examples: list[Example]
    eval_examples: list[Example]
    train: Dataset
    eval: Dataset | None
    report: DataReport
    skipped: list[Problem]  # the ERROR problems of examples left out with on_bad_example: skip


@shareable  # a sweep's runs in one process prepare the same data once (prefkit.data.reuse)
def prepare_data(config: Config, tokenizer: Any) -> PreparedData:
    """Everything between the config's data keys and the trainer's datasets."""
    from datasets import Dataset

    train_sources, eval_sources = sources(config, "train"), sources(config, "eval")
    warn_eval_overlap(train_sources, eval_sources)
    encoder = ChatEncoder(tokenizer, config.template, config.cutoff_len)
    # max_samples cuts each file before anything is tokenised: the records past it cost nothing.
    train_files = [first_records(f, config.max_samples) for f in parse_sources(train_sources, config.stage)]
    eval_files = []
    eval_left = config.max_eval_samples  # a total over the eval files, not a count per file
    for parsed in parse_sources(eval_sources, config.stage):
        if eval_left is not None and eval_left <= 0:
            break
        eval_files.append(first_records(parsed, eval_left))
        eval_left = None if eval_left is None else eval_left - eval_files[-1].records
    report = check_files([*train_files, *eval_files], config.stage, encoder)

    skipped = report.errors
    unread = [p for p in skipped if p.kind == UNREAD_REST]
    if unread:
        raise DataError(
            "part of a data file could not be read, so how many examples it holds is unknown; "
            "`on_bad_example: skip` cannot skip what was never read -- fix the file:\n"
            + "\n".join(str(p) for p in unread),
            report,
        )
    if skipped and config.on_bad_example == "error":
        raise DataError(
            f"{len(report.unusable)} of {report.records} examples are unusable:\n"
            f"{format_report_problems(report)}\n"
            "Fix them, or set `on_bad_example: skip` to train on the rest.",
            report,
        )
    for problem in skipped:
        logger.warning("skipped %s", problem)

    train = usable_examples(train_files, report)
    if eval_files:
        evals = usable_examples(eval_files, report)
    else:
        train, evals = split_examples(train, config.val_size, config.seed)
        evals = evals[: config.max_eval_samples or None]
    if skipped:
        logger.warning(
            "skipped %d unusable examples (listed above); training on %d", len(report.unusable), len(train)
        )
    if not train:
        raise DataError("no usable training examples left", report)

    def to_dataset(examples: list[Example]) -> Dataset:
        return Dataset.from_list([report.features[e.location] for e in examples])

    return PreparedData(
        train, evals, to_dataset(train), to_dataset(evals) if evals else None, report, skipped
    )


def check_data(
    paths: list[str | Path],
    *,
    stage: str | None = None,
    tokenizer: Any = None,
    cutoff_len: int = 2048,
    template: str | None = None,
    format: str | None = None,
) -> DataReport:
    """What `prefkit data check` reports: read and check files, with token lengths when given the model's
    tokenizer."""
    parsed = []
    for path in paths:
        files = data_files(path)
        if not files and Path(path).is_dir():
            # `train` refuses a folder with no data files in it; `data check` must not call it clean.
            message = f"the folder holds no data files ({', '.join(supported_extensions())})"
            problem = Problem(Location(str(path)), message, Severity.ERROR, "empty_folder")
            parsed.append(ParsedFile(str(path), None, problems=[problem]))
        parsed += [parse_file(p, stage=stage, format=format) for p in files]
    detected_stage = stage or next((f.stage for f in parsed if f.stage), "dpo")
    encoder = None
    if tokenizer is not None:
        encoder = ChatEncoder(tokenizer, template, cutoff_len)
    return check_files(parsed, detected_stage, encoder)
