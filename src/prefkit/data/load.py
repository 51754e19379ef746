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

from prefkit.data.dataset_info import DATASET_INFO, resolve_dataset
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
from prefkit.data.shared import shareable
from prefkit.data.tokenize import ChatEncoder
from prefkit.data.validate import DataReport, check_files, usable_examples
from prefkit.errors import BadDataError

if TYPE_CHECKING:
    from datasets import Dataset

    from prefkit.config import Config

logger = logging.getLogger(__name__)


class DataError(BadDataError):
    """Unusable data (with `on_bad_example: error`) or no data at all. str() is the full report."""

    def __init__(self, message: str, report: DataReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class Source:
    path: Path
    format: str | None = None
    columns: dict[str, str] | None = None
    tags: dict[str, str] | None = None


def _files(path: str | Path) -> list[Path]:
    """A data file, or every data file in a folder (sorted, so the order is reproducible)."""
    path = Path(path)
    if path.is_dir():
        suffixes = set(supported_extensions())
        # A LLaMA-Factory data folder holds its dataset_info.json beside the data: an index, not data.
        return sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes and p.name != DATASET_INFO)
    return [path]


def sources(config: Config, split: str = "train") -> list[Source]:
    """Where the train (or eval) examples come from: a direct file, or dataset names via dataset_info.json.

    A file listed twice (``dataset: d,d``, or two names for one file) is read twice -- someone may mean
    to weigh it double -- but never silently: each repeat gets a warning."""
    direct = config.train_file if split == "train" else config.eval_file
    names = config.dataset if split == "train" else config.eval_dataset
    if direct and names:
        key = "train_file" if split == "train" else "eval_file"
        raise DataError(
            f"set either `{key}` or `{'dataset' if split == 'train' else 'eval_dataset'}`, not both"
        )
    if direct:
        return _warn_repeats([Source(p, config.formatting, config.columns) for p in _files(direct)], split)
    out = []
    for name in names or []:
        spec = resolve_dataset(name, config.dataset_dir)
        if spec.stage != config.stage:
            kind = "preference (ranking: true)" if spec.stage == "dpo" else "SFT (ranking: false)"
            raise DataError(
                f"dataset '{name}' in {config.dataset_dir}/dataset_info.json is {kind} data, "
                f"but stage is {config.stage}"
            )
        out += [
            Source(p, spec.format_name, spec.columns, spec.tags) for path in spec.paths for p in _files(path)
        ]
    if split == "train" and not out:
        raise DataError(
            "no training data: set `train_file` (a path) or `dataset` (names in dataset_info.json)"
        )
    return _warn_repeats(out, split)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return a == b


def _warn_repeats(found: list[Source], split: str) -> list[Source]:
    seen: list[Path] = []
    for source in found:
        if any(_same_file(source.path, earlier) for earlier in seen):
            logger.warning(
                "%s is listed more than once for %s data: every example in it is used once per listing",
                source.path,
                split,
            )
        seen.append(source.path)
    return found


def warn_eval_overlap(train: list[Source], evals: list[Source]) -> None:
    """Evaluating on a training file measures memorisation, not learning: say so."""
    for source in evals:
        if any(_same_file(source.path, t.path) for t in train):
            logger.warning(
                "%s is both training and evaluation data: the eval metrics will measure the training "
                "examples, not held-out ones",
                source.path,
            )


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


@shareable  # a sweep's runs in one process prepare the same data once (prefkit.data.shared)
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
    model: str | None = None,
    cutoff_len: int = 2048,
    template: str | None = None,
    format: str | None = None,
) -> DataReport:
    """What `prefkit data check` reports: read and check files, with token lengths when given a model."""
    from prefkit.env import cache_dir
    from prefkit.model.loader import load_tokenizer
    from prefkit.model_sources import resolve_first

    parsed = []
    for path in paths:
        files = _files(path)
        if not files and Path(path).is_dir():
            # `train` refuses a folder with no data files in it; `data check` must not call it clean.
            message = f"the folder holds no data files ({', '.join(supported_extensions())})"
            problem = Problem(Location(str(path)), message, Severity.ERROR, "empty_folder")
            parsed.append(ParsedFile(str(path), None, problems=[problem]))
        parsed += [parse_file(p, stage=stage, format=format) for p in files]
    detected_stage = stage or next((f.stage for f in parsed if f.stage), "dpo")
    encoder = None
    if model:
        encoder = ChatEncoder(load_tokenizer(resolve_first(model, cache_dir())), template, cutoff_len)
    return check_files(parsed, detected_stage, encoder)
