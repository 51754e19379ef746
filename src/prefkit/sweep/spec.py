"""``sweep.json``: what a sweep folder is -- one base config (its file, fixed overrides and every resolved
value), how its runs are evaluated, the metric they are ranked by, and every run it has planned (folder
name, overrides, swept settings). Each run's config is rebuilt from this file alone, so a worker process,
a Ray task or a rerun days later trains exactly the run that was planned.

A sweep folder holds runs of one base config: a later ``prefkit sweep`` into the same folder may add
combinations (another ``--grid``, more ``--trials``), but one whose base config or evaluation differs is
refused with the differences listed -- its runs would not be comparable with those already there.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import prefkit
from prefkit.config import RENAMED_KEYS, ConfigError, load_config
from prefkit.errors import PrefkitError
from prefkit.sweep.grid import SWEEP_KEYS, Combination, run_name
from prefkit.train.run.folder import write_json_atomic

if TYPE_CHECKING:
    from prefkit.config import Config

SPEC_FILE = "sweep.json"
HELDOUT_FILE = "heldout.jsonl"
BASELINE = "baseline"  # the job (and folder) that evaluates the model the runs start from
FORMAT = 1

# Keys that decide which pairs are held out; swept, they would rank runs on different pairs.
EVAL_SPLIT_KEYS = frozenset({"val_size", "eval_file", "eval_dataset", "max_eval_samples", "dataset_dir"})
# With `val_size`, the held-out pairs are drawn from the training data: these change which.
VAL_SPLIT_KEYS = frozenset(
    {"seed", "train_file", "dataset", "max_samples", "formatting", "columns", "on_bad_example", "stage"}
)


class SweepError(PrefkitError):
    """A sweep that cannot start or go on as asked."""


@dataclass
class EvalSettings:
    """How each run (and the base model) is evaluated on held-out pairs after training.

    ``eval_file``: preference pairs to evaluate on; None takes the base config's eval split (``val_size``,
    ``eval_file`` or ``eval_dataset``), written to ``heldout.jsonl`` in the sweep folder. ``max_samples``
    caps the pairs, ``generate`` the prompts replied to (None: all). ``max_new_tokens`` None: the config's
    ``eval_max_new_tokens``. ``scorers`` are added to the config's ``eval_scorers``. ``guard_limits`` set
    the largest share of replies that may carry a flag (:data:`prefkit.score.guards.FLAGS`), for a
    task whose good replies carry one (short answers, say)."""

    eval_file: str | None = None
    max_samples: int | None = None
    generate: int | None = None
    max_new_tokens: int | None = None
    scorers: tuple[str, ...] = ()
    guard_limits: dict[str, float] = field(default_factory=dict)


@dataclass
class PlannedRun:
    name: str
    overrides: list[str]  # the grid's key=value texts
    settings: dict[str, Any]  # the swept keys' resolved values
    identity: str  # digest of the run's resolved config: two combinations meaning the same run are one


@dataclass
class SweepSpec:
    config_file: str
    overrides: list[str]
    base: dict[str, Any]  # the base config's resolved values, the sweep's own keys left out
    evaluation: dict[str, Any]
    metric: str
    cwd: str  # relative paths in the config are relative to this folder, on every machine
    runs: list[PlannedRun] = field(default_factory=list)
    commands: list[dict[str, Any]] = field(default_factory=list)
    prefkit_version: str = prefkit.__version__
    format: int = FORMAT

    # -- reading and writing ------------------------------------------------------------------------
    @classmethod
    def read(cls, sweep_dir: Path) -> SweepSpec:
        path = sweep_dir / SPEC_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise SweepError(f"{path}: not a readable sweep file ({err})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise SweepError(f"{path}: not a prefkit sweep file of format {FORMAT}")
        try:
            runs = [PlannedRun(**r) for r in data.pop("runs", [])]
            return cls(**data, runs=runs)
        except TypeError as err:  # a key missing or unknown: the file was edited or is damaged
            raise SweepError(f"{path}: not a valid sweep file ({err})") from None

    def write(self, sweep_dir: Path) -> None:
        write_json_atomic(sweep_dir / SPEC_FILE, asdict(self))

    # -- runs ---------------------------------------------------------------------------------------
    def run(self, name: str) -> PlannedRun:
        for run in self.runs:
            if run.name == name:
                return run
        raise SweepError(f"{name}: no such run in this sweep")

    def run_config(self, run: PlannedRun, sweep_dir: Path) -> Config:
        """The run's config, rebuilt from the base config file -- refused if that file no longer gives the
        config the run was planned with (edited while the sweep runs, or since)."""
        config = load_config(
            self.config_file, [*self.overrides, *run.overrides, *sweep_overrides(sweep_dir / run.name)]
        )
        if _digest(_comparable(config)) != run.identity:
            self._refuse_changed(config, run.name, set(run.settings))
        return config

    def base_config(self) -> Config:
        config = load_config(self.config_file, self.overrides)
        if _plain(_comparable(config)) != _plain(self.base):
            self._refuse_changed(config, "its runs", set())
        return config

    def _refuse_changed(self, config: Config, what: str, swept: set[str]) -> None:
        now, then = _plain(_comparable(config)), self.base
        changed = [k for k in sorted(set(now) | set(then)) if k not in swept and now.get(k) != then.get(k)]
        raise SweepError(
            f"{self.config_file} no longer gives the config this sweep planned {what} with "
            f"({', '.join(changed) or 'its resolved values'} changed): every run of a sweep trains from one "
            "base config. Restore the file, or start another sweep with --output-dir."
        )

    def heldout_path(self, sweep_dir: Path) -> str:
        """The held-out pairs: heldout.jsonl in the sweep folder, an absolute path, or a builtin: name."""
        data = self.evaluation["data"]
        return str(sweep_dir / data) if data == HELDOUT_FILE else data


def sweep_overrides(run_dir: Path) -> list[str]:
    """What the sweep sets for every run: its folder, never replaced, always resumed."""
    return [f"output_dir={run_dir}", "overwrite_output_dir=false", "resume_from_checkpoint=auto"]


def _comparable(config: Config) -> dict[str, Any]:
    return {k: v for k, v in config.resolved().items() if k not in SWEEP_KEYS}


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """Values as sweep.json holds them (JSON types), so a config compares equal to its record."""
    return json.loads(json.dumps(values, default=str))


def _digest(values: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_base(config_file: str | Path, overrides: Sequence[str]) -> Config:
    for text in overrides:
        key = text.partition("=")[0].strip()
        if key in SWEEP_KEYS:
            raise SweepError(f"{text}: the sweep sets {key} for every run itself (see --output-dir)")
    return load_config(config_file, overrides)


def plan_runs(
    config_file: str,
    overrides: Sequence[str],
    combos: Sequence[Combination],
    existing: Sequence[PlannedRun],
) -> tuple[list[PlannedRun], list[PlannedRun]]:
    """(the runs of ``combos``, in order; those among them that are new). Every combination's config is
    loaded first, so a value the config refuses stops the sweep before anything runs, with every
    problem listed."""
    by_identity = {run.identity: run for run in existing}
    planned: list[PlannedRun] = []
    new: list[PlannedRun] = []
    problems: dict[str, list[str]] = {}  # each problem -> the combinations that have it
    for combo in combos:
        try:
            config = load_config(config_file, [*overrides, *combo.overrides])
        except ConfigError as err:
            for line in str(err).splitlines():
                problems.setdefault(line.strip(), []).append(combo.label())
            continue
        values = _comparable(config)
        identity = _digest(values)
        if identity in by_identity:
            if by_identity[identity] not in planned:
                planned.append(by_identity[identity])
            continue
        keys = [RENAMED_KEYS.get(k, k) for k, _ in combo.items]
        settings = {k: values.get(k) for k in keys}
        run = PlannedRun(run_name(len(existing) + len(new), combo), combo.overrides, settings, identity)
        by_identity[identity] = run
        planned.append(run)
        new.append(run)
    if problems:
        listed = []
        for problem, labels in problems.items():
            more = f" and {len(labels) - 3} more" if len(labels) > 3 else ""
            listed.append(f"{problem}\n  in {'; '.join(labels[:3])}{more}")
        raise SweepError("some combinations are not valid configs:\n" + "\n".join(listed))
    return planned, new


def eval_data_problem(base: Config, swept_keys: set[str], evaluation: EvalSettings) -> str | None:
    """Why the sweep cannot rank its runs on one held-out set, or None."""
    if evaluation.eval_file:
        if _same_data(evaluation.eval_file, base.train_file):
            return (
                f"--eval-file {evaluation.eval_file} is the training data: the leaderboard would reward "
                "memorising it; pass held-out pairs"
            )
        if evaluation.eval_file.startswith("builtin:") or Path(evaluation.eval_file).exists():
            return None
        return f"--eval-file {evaluation.eval_file}: no such file"
    if base.stage != "dpo":
        return (
            f"the base config is stage: {base.stage}; the sweep ranks runs on held-out preference pairs: "
            "pass --eval-file PAIRS.jsonl"
        )
    if not (base.eval_file or base.eval_dataset or base.val_size):
        return (
            "the sweep ranks runs on held-out pairs, and the base config holds none out: set val_size, "
            "eval_file or eval_dataset in it, or pass --eval-file PAIRS.jsonl"
        )
    moving = swept_keys & EVAL_SPLIT_KEYS
    if not (base.eval_file or base.eval_dataset):
        moving |= swept_keys & VAL_SPLIT_KEYS
    if moving:
        return (
            f"the grid changes which pairs are held out ({', '.join(sorted(moving))}), so the runs would be "
            "ranked on different pairs: set eval_file in the base config or pass --eval-file PAIRS.jsonl"
        )
    return None


def _same_data(eval_file: str, train_file: str | None) -> bool:
    if not train_file:
        return False
    if eval_file == train_file:
        return True
    try:
        return Path(eval_file).resolve() == Path(train_file).resolve()
    except OSError:
        return False


def resolved_evaluation(base: Config, evaluation: EvalSettings) -> dict[str, Any]:
    """The evaluation as recorded in sweep.json (and compared on a rerun)."""
    data = evaluation.eval_file or HELDOUT_FILE
    if not data.startswith("builtin:") and data != HELDOUT_FILE:
        data = str(Path(data).resolve())
    return {
        "data": data,
        "max_samples": evaluation.max_samples,
        "generate": evaluation.generate,
        "max_new_tokens": evaluation.max_new_tokens or base.eval_max_new_tokens,
        "scorers": list(dict.fromkeys([*base.eval_scorers, *evaluation.scorers])),
        "batch_size": base.per_device_eval_batch_size,
        # only when set: a sweep recorded before guard limits existed resumes as it was
        **({"guard_limits": dict(evaluation.guard_limits)} if evaluation.guard_limits else {}),
    }


def new_spec(
    config_file: str | Path, overrides: Sequence[str], base: Config, evaluation: dict[str, Any], metric: str
) -> SweepSpec:
    return SweepSpec(
        config_file=str(Path(config_file).resolve()),
        overrides=list(overrides),
        base=_comparable(base),
        evaluation=evaluation,
        metric=metric,
        cwd=os.getcwd(),
    )


def differences(old: SweepSpec, new: SweepSpec) -> list[str]:
    """What makes ``new`` a different sweep from ``old``: base config values and evaluation settings."""
    lines = []
    for section, a, b in (("", old.base, new.base), ("evaluation ", old.evaluation, new.evaluation)):
        for key in sorted(set(a) | set(b)):
            if json.dumps(a.get(key), sort_keys=True) != json.dumps(b.get(key), sort_keys=True):
                before = json.dumps(a[key]) if key in a else "(not set)"
                after = json.dumps(b[key]) if key in b else "(not set)"
                lines.append(f"  {section}{key}: {before} in this sweep, {after} now")
    return lines


def record_command(
    spec: SweepSpec, groups: Sequence[Sequence[str]], trials: int | None, draw_random: bool, seed: int
) -> None:
    spec.commands.append(
        {
            "grid": [list(g) for g in groups],
            "trials": trials,
            "random": draw_random,
            "seed": seed,
            "metric": spec.metric,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    )
