"""Reading inside the runs directory only, and never failing on what is read.

Every file the page shows is reached by scanning the runs directory (see :mod:`prefkit.ui.runs`), never
by joining a path a request names. Even so, a run folder may hold a symlink (``metrics.jsonl ->
/etc/passwd``), so each file is resolved before it is opened and refused when its real location is
outside the runs directory. Files are size-capped, and JSON is parsed leniently: a broken or missing
file becomes a *problem* (a sentence the page shows), never an exception that would answer 500.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

MAX_JSON_BYTES = 8 << 20  # a training_config.json or eval.json is a few KiB; refuse a runaway file
MAX_TEXT_BYTES = 512 << 10  # eval.md and similar, shown as text


def contained(root: Path, path: Path) -> Path | None:
    """``path``'s real location if it exists and lies inside ``root`` (already resolved), else None."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    return real if real == root or real.is_relative_to(root) else None


def finite(value: Any) -> Any:
    """``value`` with every NaN and infinity replaced by None: JSON has no such numbers (Python writes
    ``NaN`` into metrics.jsonl for a log record whose steps were all skipped), and a browser's JSON.parse
    rejects them. The page draws None as a gap in a curve."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def read_text(root: Path, path: Path, limit: int = MAX_TEXT_BYTES) -> tuple[str | None, str | None]:
    """(text, None), or (None, why not): missing, outside the runs directory, too large, unreadable."""
    if not path.exists() and not path.is_symlink():
        return None, None  # simply absent: not a problem worth a sentence
    real = contained(root, path)
    if real is None:
        return None, f"{path.name}: leads outside the runs directory (a symlink?); not read"
    try:
        if not real.is_file():
            return None, f"{path.name}: not a regular file"
        size = real.stat().st_size
        if size > limit:
            return None, f"{path.name}: {size} bytes, over the {limit}-byte limit; not read"
        return real.read_bytes().decode("utf-8", errors="replace"), None
    except OSError as err:
        return None, f"{path.name}: cannot be read ({err.strerror or err})"


def read_json(root: Path, path: Path, limit: int = MAX_JSON_BYTES) -> tuple[Any, str | None]:
    """(parsed JSON with non-finite numbers as None, None), or (None, why not)."""
    text, problem = read_text(root, path, limit)
    if text is None:
        return None, problem
    try:
        return finite(json.loads(text)), None
    except (ValueError, RecursionError) as err:
        return None, f"{path.name}: not valid JSON ({str(err)[:120]})"


def mtime(path: Path) -> float | None:
    try:
        return path.stat(follow_symlinks=False).st_mtime
    except OSError:
        return None
