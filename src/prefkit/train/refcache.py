"""The reference model's log-probs, computed once and kept on disk.

A reference-anchored loss (sigmoid, hinge, ipo, kto_pair) needs the reference model's summed log-probs
of each pair's chosen and rejected reply. They depend only on the reference weights, the pair's token
ids and the precision they were computed in -- not on the step, the batch or the run -- so prefkit
stores them in an SQLite file under ``<cache>/reference/``, one file per reference identity (a digest
of the weight files, config and remote-code files -- for a hub id, those of the revision it resolved to
in the local hub cache --, the adapter the reference may carry, the compute dtype and the quantisation),
one row per pair (a digest of its token ids). The parts of the identity are stored inside the file too
(table ``identity``), so a cache file says what it holds. Later epochs, resumed runs, sweeps and reruns
on the same model and data read them instead of running the reference forward again. With full
fine-tuning a warm cache means no frozen copy of the model is loaded at all.

SQLite gives atomic writes (a killed run never leaves a half-written row) and safe concurrent writers
(the processes of a distributed run).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

# Bump when the way log-probs are computed changes, so old caches are not read.
FORMAT = 1
PAIR_KEYS = "pair_keys"  # the batch key carrying each pair's digest, in row order
# What the outputs depend on: weights, configs, and remote code (trust_remote_code runs the folder's .py
# files). Not a checkpoint's optimizer, scheduler or RNG state, nor the tokenizer files (the token ids are
# in each pair's key).
_DIGESTED_SUFFIXES = (".safetensors", ".gguf", ".py")
_DIGESTED_NAMES = ("config.json", "adapter_config.json")
_WEIGHT_BINS = ("pytorch_model", "adapter_model", "model")


def _digested(path: Path) -> bool:
    name = path.name
    if path.suffix == ".bin":
        return name.startswith(_WEIGHT_BINS)
    return path.suffix in _DIGESTED_SUFFIXES or name in _DIGESTED_NAMES


def pair_key(feature: dict[str, Any]) -> str:
    """A digest of one pair's token ids (what the reference log-probs depend on besides the model)."""
    ids = (feature["prompt_ids"], feature["chosen_ids"], feature["rejected_ids"])
    return hashlib.blake2b(json.dumps(ids, separators=(",", ":")).encode(), digest_size=16).hexdigest()


def _file_digest(path: Path, index: dict[str, Any]) -> str:
    """sha256 of a file, remembered by (path, size, mtime) so an unchanged file is read once."""
    stat = path.stat()
    entry = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    if entry not in index:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        index[entry] = digest.hexdigest()
    return index[entry]


def hub_snapshot(hub_id: str) -> Path | None:
    """The local hub cache's folder for the revision ``hub_id`` resolves to now (its name is the commit
    hash), or None where the hub cache does not hold it."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(hub_id, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def folder_digest(folder: str | os.PathLike[str], cache: Path) -> str:
    """A digest of a model or adapter folder's weight, config and remote-code files; for a hub id, of the
    snapshot folder of the revision it resolves to (named by its commit), else of the id as given."""
    path = Path(folder)
    if not path.is_dir():
        snapshot = hub_snapshot(str(folder))
        if snapshot is None:
            return f"hub:{folder}"
        return f"hub:{folder}@{snapshot.name}:{folder_digest(snapshot, cache)}"
    index_path = cache / "reference" / "file-digests.json"
    try:
        index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    except (OSError, ValueError):
        index = {}
    files = sorted(p for p in path.iterdir() if p.is_file() and _digested(p))
    combined = hashlib.sha256()
    for p in files:
        combined.update(f"{p.name}:{_file_digest(p, index)}\n".encode())
    index_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = index_path.with_name(f".{index_path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(index))
    os.replace(tmp, index_path)
    return combined.hexdigest()


def reference_identity(
    model_path: str,
    adapter: str | None,
    dtype: torch.dtype,
    cache: Path,
    quantization: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What the reference's log-probs depend on: its weights (base, and the adapter it starts from, if
    any), the dtype they are computed in, the base's quantisation, and this module's format."""
    return {
        "format": FORMAT,
        "model": folder_digest(model_path, cache),
        "adapter": folder_digest(adapter, cache) if adapter else None,
        "dtype": str(dtype),
        "quantization": quantization,
    }


class ReferenceCache:
    """Reference log-prob sums per pair key, in one SQLite file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, timeout=60, isolation_level=None)
        # The ranks of one DDP launch open the same new file at once. Switching to WAL takes a lock for
        # which SQLite does not wait (its busy handler is skipped there), so that one is retried.
        for attempt in range(600):
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or attempt == 599:
                    raise
                time.sleep(0.1)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS logps "
            "(key TEXT PRIMARY KEY, chosen REAL NOT NULL, rejected REAL NOT NULL)"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS identity (part TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self.hits = 0
        self.misses = 0

    @classmethod
    def open(cls, cache: Path, identity: dict[str, Any]) -> ReferenceCache:
        """The cache file of ``identity`` (see :func:`reference_identity`), which it records inside."""
        name = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]
        opened = cls(cache / "reference" / f"{name}.sqlite")
        opened._db.executemany(
            "INSERT OR IGNORE INTO identity (part, value) VALUES (?, ?)",
            [(part, json.dumps(value)) for part, value in sorted(identity.items())],
        )
        return opened

    def identity(self) -> dict[str, Any]:
        """The identity parts this file was opened for."""
        rows = self._db.execute("SELECT part, value FROM identity").fetchall()
        return {part: json.loads(value) for part, value in rows}

    def get(self, keys: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The (chosen, rejected) sums of every key, in order, as float64 -- or None if any is missing."""
        found = self.lookup(keys)
        if len(found) < len(set(keys)):
            self.misses += len(keys)
            return None
        self.hits += len(keys)
        rows = [found[k] for k in keys]
        return (
            torch.tensor([c for c, _ in rows], dtype=torch.float64),
            torch.tensor([r for _, r in rows], dtype=torch.float64),
        )

    def lookup(self, keys: Iterable[str]) -> dict[str, tuple[float, float]]:
        unique = list(dict.fromkeys(keys))
        found: dict[str, tuple[float, float]] = {}
        for start in range(0, len(unique), 500):  # SQLite's limit on bound parameters
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT key, chosen, rejected FROM logps WHERE key IN ({marks})"
            for key, chosen, rejected in self._db.execute(query, chunk):
                found[key] = (chosen, rejected)
        return found

    def put(self, keys: Sequence[str], chosen: torch.Tensor, rejected: torch.Tensor) -> None:
        rows = zip(keys, chosen.double().tolist(), rejected.double().tolist(), strict=True)
        finite = [(k, c, r) for k, c, r in rows if _finite(c) and _finite(r)]  # never cache a broken value
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO logps VALUES (?, ?, ?)", finite)

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM logps").fetchone()[0])

    def close(self) -> None:
        self._db.close()


def _finite(value: float) -> bool:
    return value == value and abs(value) != float("inf")


@torch.no_grad()
def fill(
    cache: ReferenceCache,
    reference: Any,
    features: Sequence[dict[str, Any]],
    collator: Any,
    *,
    batch_size: int,
    autocast: Callable[[], AbstractContextManager[Any]],
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], Any] | None = None,
) -> int:
    """Compute and store the reference log-probs of every pair in ``features`` not yet cached: this
    process's share of them, every ``world_size``-th from ``rank``. Returns how many it computed.

    Every process must split the same list of missing pairs, so with several processes they read the
    cache between two ``barrier`` calls: a process that had already stored its share would otherwise
    leave the others a shorter list, and pairs nobody computes."""
    from prefkit.model.logps import sequence_logps

    keys = [pair_key(f) for f in features]
    if barrier is not None:
        barrier()
    present = cache.lookup(keys)
    if barrier is not None:
        barrier()
    share = [f for f, k in zip(features, keys, strict=True) if k not in present][rank::world_size]
    device = next(reference.parameters()).device
    for start in range(0, len(share), batch_size):
        chunk = share[start : start + batch_size]
        batch = collator(chunk)
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        with autocast():  # a fresh context each batch: accelerate's is a one-shot generator
            sums, _, _ = sequence_logps(reference, inputs)
        cache.put([pair_key(f) for f in chunk], sums[: len(chunk)], sums[len(chunk) :])
    return len(share)
