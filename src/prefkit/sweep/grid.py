"""What a sweep runs: ``--grid key=v1,v2 ...`` groups expanded into combinations, all of them, the first N
or N drawn at random with a seed, and a stable folder name for each.

A *group* is the keys of one ``--grid``: its runs are every combination of their values (the cartesian
product). Several ``--grid`` groups add their runs together (a union, not a product): ``--grid
pref_beta=1,2,3 simpo_gamma=0.3,0.5 --grid pref_loss=orpo,sigmoid pref_beta=0.1`` is 6 SimPO runs and 2
more. A key with one value in a group is a setting of that group's runs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

import yaml

from prefkit.config import ConfigError, parse_override
from prefkit.errors import PrefkitError

# Keys the sweep sets itself for every run (where the run goes, and that it resumes rather than restarts).
SWEEP_KEYS = ("output_dir", "overwrite_output_dir", "resume_from_checkpoint")
NAME_LIMIT = 120  # characters of a run folder's name
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]+")


class GridError(PrefkitError):
    """A --grid, --trials or command line the sweep cannot use."""


@dataclass(frozen=True)
class Axis:
    """One swept key and its values, each as the override text the user wrote (``1e-6``, not 1e-06)."""

    key: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Combination:
    """One run's swept settings: (key, value text) pairs in the order of the grid."""

    items: tuple[tuple[str, str], ...]

    @property
    def overrides(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.items]

    def label(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.items)


def parse_axis(text: str) -> Axis:
    """``key=v1,v2,v3`` -> Axis. Values holding a comma are written as a YAML list:
    ``lora_target=["q_proj,v_proj", all]``."""
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key or not raw:
        raise GridError(f"--grid {text!r}: expected key=value1,value2,...")
    if key in SWEEP_KEYS:
        raise GridError(f"--grid {text!r}: the sweep sets {key} for every run itself; it cannot be swept")
    if raw.startswith("["):
        try:
            items = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise GridError(f"--grid {text!r}: not a YAML list of values ({exc})") from None
        if not isinstance(items, list) or not items:
            raise GridError(f"--grid {text!r}: expected a non-empty list of values")
        values = [v if isinstance(v, str) else json.dumps(v) for v in items]  # JSON is YAML
    else:
        values = [v.strip() for v in raw.split(",")]
    if any(not v for v in values):
        raise GridError(f"--grid {text!r}: an empty value (two commas in a row, or a trailing comma)")
    for value in values:
        try:
            parse_override(f"{key}={value}")
        except ConfigError as exc:
            raise GridError(f"--grid {text!r}: {exc}") from None
    if len(set(values)) != len(values):
        raise GridError(f"--grid {text!r}: a value is listed twice")
    return Axis(key, tuple(values))


def parse_group(texts: Sequence[str]) -> tuple[Axis, ...]:
    axes = tuple(parse_axis(t) for t in texts)
    keys = [a.key for a in axes]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise GridError(f"--grid: {', '.join(repeated)} given twice in one group; list its values once")
    if not axes:
        raise GridError("--grid needs at least one key=value1,value2,...")
    return axes


def combinations(groups: Sequence[Sequence[Axis]]) -> list[Combination]:
    """Every combination of every group, group by group, the last key varying fastest."""
    out: list[Combination] = []
    for axes in groups:
        for values in itertools.product(*(a.values for a in axes)):
            out.append(Combination(tuple(zip((a.key for a in axes), values, strict=True))))
    return out


def select(
    combos: Sequence[Combination], trials: int | None, draw_random: bool, seed: int
) -> list[Combination]:
    """All combinations; the first ``trials``; or ``trials`` drawn at random without repeats.

    The random draw is seeded and sequential, so the same grid and seed give the same runs on every
    machine, and asking for more trials later keeps the earlier ones (a draw of 8 is the start of a draw
    of 12)."""
    if draw_random and trials is None:
        raise GridError("--random draws --trials N of the combinations: give --trials")
    if trials is not None and trials < 1:
        raise GridError(f"--trials {trials}: expected a number of runs from 1 up")
    if trials is None or trials >= len(combos):
        return list(combos)
    if not draw_random:
        return list(combos[:trials])
    rng = random.Random(seed)
    picked: list[int] = []
    seen: set[int] = set()
    while len(picked) < trials:
        index = rng.randrange(len(combos))
        if index not in seen:
            seen.add(index)
            picked.append(index)
    return [combos[i] for i in picked]


def run_name(index: int, combo: Combination) -> str:
    """``run-003-pref_beta=2,simpo_gamma=0.5``: the index keeps names unique and sorted, the settings make
    them readable. Characters a file system may refuse become ``_``; a long name is cut and ends in a hash
    of the whole."""
    label = _UNSAFE.sub("_", combo.label()).strip("._") or "run"
    name = f"run-{index:03d}-{label}"
    if len(name) > NAME_LIMIT:
        digest = hashlib.sha256(combo.label().encode()).hexdigest()[:8]
        name = f"{name[: NAME_LIMIT - 9]}-{digest}"
    return name


@dataclass
class CommandLine:
    """``prefkit sweep``'s positional tokens, read in order: the config, fixed overrides, then groups."""

    config: str
    overrides: list[str]
    groups: list[list[str]]


def parse_command_line(tokens: Sequence[str]) -> CommandLine:
    """``CONFIG [key=value ...] --grid key=v1,v2 [key=v1,v2 ...] [--grid ...]`` -- every token after a
    ``--grid`` up to the next ``--grid`` belongs to that group."""
    if not tokens or tokens[0].startswith("-"):
        raise GridError("name the base config: prefkit sweep CONFIG.yaml --grid key=v1,v2 ...")
    config, overrides, groups = tokens[0], [], []
    current: list[str] | None = None
    for token in tokens[1:]:
        if token == "--grid":
            current = []
            groups.append(current)
        elif token.startswith("--grid="):
            current = [token.removeprefix("--grid=")]
            groups.append(current)
        elif token.startswith("-"):
            raise GridError(f"unknown option {token} (see prefkit sweep --help)")
        elif current is None:
            overrides.append(token)
        else:
            current.append(token)
    if not groups:
        raise GridError("give at least one --grid key=v1,v2 ...")
    empty = [i + 1 for i, g in enumerate(groups) if not g]
    if empty:
        raise GridError(f"--grid number {empty[0]} names no key=value1,value2,...")
    return CommandLine(config, overrides, groups)
