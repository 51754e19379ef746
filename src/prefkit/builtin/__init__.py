"""Files shipped inside the package: bundled datasets (and, later, builtin model aliases).

A data path written ``builtin:NAME`` anywhere prefkit takes a data file resolves to
``prefkit/builtin/data/NAME`` (a known extension may be left off).
"""

from __future__ import annotations

from pathlib import Path

from prefkit.errors import PrefkitError

DATA_DIR = Path(__file__).parent / "data"
PREFIX = "builtin:"


def bundled_datasets() -> list[str]:
    return sorted(p.name for p in DATA_DIR.iterdir() if p.suffix in {".jsonl", ".json", ".parquet", ".csv"})


def resolve_data_path(path: str | Path) -> Path:
    """``builtin:NAME`` -> the bundled file; any other path is returned unchanged."""
    text = str(path)
    if not text.startswith(PREFIX):
        return Path(path)
    name = text[len(PREFIX) :]
    for candidate in (DATA_DIR / name, *(DATA_DIR / f"{name}{ext}" for ext in (".jsonl", ".json"))):
        if candidate.is_file():
            return candidate
    raise PrefkitError(f"no bundled dataset '{name}'; bundled: {', '.join(bundled_datasets())}")
