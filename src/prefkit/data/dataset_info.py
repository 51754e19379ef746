"""LLaMA-Factory's ``dataset_info.json``: dataset names -> files, format, columns and tags.

A LLaMA-Factory config says ``dataset: name1,name2`` and ``dataset_dir: data``; each name is an
entry of ``data/dataset_info.json``. We honour the local-file entries (``file_name``, a file or a
folder) with their ``formatting``, ``ranking``, ``columns`` and ``tags``, and map
(formatting, ranking) onto our formats. Hub entries need a download we do not do, so they get an
error saying so rather than a surprise network call.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefkit.data import jsontext
from prefkit.data.jsontext import JsonProblem
from prefkit.data.readers import READERS
from prefkit.errors import BadDataError

DATASET_INFO = "dataset_info.json"

# (formatting, ranking) -> (stage, our format name). With tags role/content LLaMA-Factory's
# sharegpt *is* the OpenAI messages shape; apply_columns turns it into the same parser's input.
_FORMATS: dict[tuple[str, bool], tuple[str, str]] = {
    ("alpaca", True): ("dpo", "alpaca"),
    ("sharegpt", True): ("dpo", "sharegpt"),
    ("alpaca", False): ("sft", "alpaca"),
    ("sharegpt", False): ("sft", "sharegpt"),
}
_HUB_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")


class DatasetInfoError(BadDataError):
    """dataset_info.json is missing or malformed, or names a dataset we cannot use."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    paths: list[Path]  # data files; a folder entry is expanded to its data files, sorted
    format_name: str
    stage: str  # "dpo" or "sft", from `ranking`
    columns: dict[str, str] | None = None
    tags: dict[str, str] | None = None


def load_dataset_info(dataset_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``dataset_info.json`` of ``dataset_dir`` (a dict of name -> entry)."""
    path = Path(dataset_dir) / DATASET_INFO
    if not path.is_file():
        raise DatasetInfoError(
            f"{path}: no such file; `dataset:` names are looked up in dataset_dir/{DATASET_INFO} "
            "(set dataset_dir, or give the data file directly with train_file)"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetInfoError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise DatasetInfoError(f"{path}: cannot read the file: {exc.strerror or exc}") from exc
    try:
        info = jsontext.loads(text)
    except JsonProblem as problem:
        line = text.count("\n", 0, problem.pos or 0) + 1
        raise DatasetInfoError(f"{path}:{line}: malformed JSON: {problem.message}") from None
    if not isinstance(info, dict):
        raise DatasetInfoError(f"{path}: expected a JSON object of dataset name -> entry")
    return info


def _shown(value: object) -> str:
    text = repr(value) if not isinstance(value, dict | list) else type(value).__name__
    return text if len(text) <= 60 else text[:56] + " ..."


def _inside(dataset_dir: Path, file_name: str, where: str) -> Path:
    """``dataset_dir / file_name``, refused unless it stays inside ``dataset_dir`` (links resolved): a
    dataset_info.json names data beside it, and must not lead prefkit to read (and quote in its error
    messages) a file elsewhere on the machine."""
    data_path = dataset_dir / file_name
    try:
        inside = data_path.resolve().is_relative_to(dataset_dir.resolve())
    except (OSError, RuntimeError, ValueError):  # a link loop, a NUL in the name
        inside = False
    if not inside or data_path.resolve() == dataset_dir.resolve():
        raise DatasetInfoError(
            f"{where}: `file_name` {file_name[:100]!r} must name a file or folder inside dataset_dir "
            f"({dataset_dir}); give a path outside it with train_file instead"
        )
    return data_path


def _mapping(value: object, key: str, name: str, path: Path) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise DatasetInfoError(f"{path}: dataset {name!r}: {key!r} must be an object of strings")
    return dict(value)


def _data_files(folder: Path) -> list[Path]:
    # As LLaMA-Factory loads a folder: every file in it; we skip hidden files and anything that is
    # not a data file (a README next to the data), and keep a sorted, reproducible order.
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and not p.name.startswith(".")
        and p.suffix.lower() in READERS
        and p.name != DATASET_INFO  # a folder entry of "." must not read its own index as data
    )


def resolve_dataset(name: str, dataset_dir: str | os.PathLike[str]) -> DatasetSpec:
    """The files, format and column mapping for dataset ``name`` of ``dataset_dir/dataset_info.json``."""
    name = name.strip()
    info = load_dataset_info(dataset_dir)
    path = Path(dataset_dir) / DATASET_INFO
    if name not in info:
        close = difflib.get_close_matches(name, list(info), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        names = sorted(info)
        known = ", ".join(n[:60] for n in names[:30]) or "none"
        if len(names) > 30:
            known += f", ... ({len(names)} in all)"
        raise DatasetInfoError(f"{path}: no dataset named {name[:60]!r}{hint} (it defines: {known})")
    entry = info[name]
    if not isinstance(entry, dict):
        raise DatasetInfoError(f"{path}: dataset {name!r}: expected an object, got {type(entry).__name__}")

    file_name = entry.get("file_name")
    if file_name is None:
        hub = [key for key in _HUB_KEYS if key in entry]
        if hub:
            raise DatasetInfoError(
                f"{path}: dataset {name!r} comes from {hub[0]} ({_shown(entry[hub[0]])}); prefkit does not "
                "download data: download it yourself, then point `file_name` at the local copy "
                "(or use train_file)"
            )
        raise DatasetInfoError(f"{path}: dataset {name!r} has no `file_name`")
    if not isinstance(file_name, str) or not file_name.strip():
        raise DatasetInfoError(f"{path}: dataset {name!r}: `file_name` must be a file or folder name")

    formatting = entry.get("formatting", "alpaca")
    ranking = entry.get("ranking", False)
    if not isinstance(ranking, bool):
        raise DatasetInfoError(
            f"{path}: dataset {name!r}: `ranking` must be true or false, got {_shown(ranking)}"
        )
    if not isinstance(formatting, str) or (formatting, ranking) not in _FORMATS:
        raise DatasetInfoError(
            f"{path}: dataset {name!r}: unknown formatting {_shown(formatting)} (expected alpaca or sharegpt)"
        )
    stage, format_name = _FORMATS[(formatting, ranking)]

    data_path = _inside(Path(dataset_dir), file_name, f"{path}: dataset {name!r}")
    if data_path.is_dir():
        paths = _data_files(data_path)
        if not paths:
            raise DatasetInfoError(
                f"{path}: dataset {name!r}: folder {data_path} holds no data files "
                f"({', '.join(sorted(READERS))})"
            )
    elif data_path.is_file():
        paths = [data_path]
    else:
        raise DatasetInfoError(f"{path}: dataset {name!r}: file {data_path} does not exist")

    return DatasetSpec(
        name=name,
        paths=paths,
        format_name=format_name,
        stage=stage,
        columns=_mapping(entry.get("columns"), "columns", name, path),
        tags=_mapping(entry.get("tags"), "tags", name, path),
    )


def resolve_datasets(names: str | list[str], dataset_dir: str | os.PathLike[str]) -> list[DatasetSpec]:
    """``dataset: a,b`` as LLaMA-Factory writes it (or a list) -> one spec per name, in order."""
    if isinstance(names, str):
        names = names.split(",")
    return [resolve_dataset(n, dataset_dir) for n in names if n.strip()]
