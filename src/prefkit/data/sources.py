"""Where a config's examples come from: a direct file or folder (``train_file``/``eval_file``), or dataset
names resolved through ``dataset_info.json`` -- as :class:`Source` records (path, format, column map,
tags), with a warning for a file listed twice or used for both training and evaluation."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prefkit.data.dataset_info import DATASET_INFO, resolve_dataset
from prefkit.data.readers import supported_extensions
from prefkit.errors import BadDataError

if TYPE_CHECKING:
    from prefkit.config import Config
    from prefkit.data.validate import DataReport

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


def data_files(path: str | Path) -> list[Path]:
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
        return _warn_repeats(
            [Source(p, config.formatting, config.columns) for p in data_files(direct)], split
        )
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
            Source(p, spec.format_name, spec.columns, spec.tags)
            for path in spec.paths
            for p in data_files(path)
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
