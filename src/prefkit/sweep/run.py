"""`prefkit sweep`: a grid (or a random sample of it) over one base config, each combination a normal prefkit
run in its own folder under one sweep folder, each evaluated on the same held-out pairs as the base model,
and a leaderboard ranked by a held-out metric with reward-hacking guards (see prefkit.sweep.ranking).

    validate every combination -> sweep.json -> held-out pairs -> jobs (base model, then each run not yet
    evaluated: trained or resumed, then evaluated) on a backend -> leaderboard

A rerun of the same command skips evaluated runs, resumes an interrupted one, retries failed ones and does
the rest. Runs share the prepared data (in one process) and the reference log-probs (the reference cache).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import prefkit
from prefkit.sweep.backends import BACKENDS, run_in_process, run_in_subprocesses, run_on_ray
from prefkit.sweep.folder import (
    EVALUATED,
    Attempt,
    SweepState,
    baseline_done,
    check_sweep_folder,
    locked,
    run_status,
)
from prefkit.sweep.grid import Combination, combinations, parse_group, select
from prefkit.sweep.leaderboard import Leaderboard, baseline_metrics, write_leaderboard
from prefkit.sweep.ranking import (
    DEFAULT_METRIC,
    canonical_metric,
    check_metric_for_grid,
    check_metric_measured,
)
from prefkit.sweep.spec import (
    BASELINE,
    HELDOUT_FILE,
    EvalSettings,
    PlannedRun,
    SweepError,
    SweepSpec,
    differences,
    eval_data_problem,
    load_base,
    new_spec,
    plan_runs,
    record_command,
    resolved_evaluation,
)

if TYPE_CHECKING:
    from transformers import TrainerCallback

    from prefkit.config import Config

logger = logging.getLogger(__name__)


@dataclass
class SweepResult:
    output_dir: Path
    runs: list[PlannedRun]  # this command's runs, in order
    skipped: list[str]  # already evaluated before this command
    attempts: dict[str, Attempt] = field(default_factory=dict)  # what this command ran, and how it went
    leaderboard: Leaderboard | None = None  # None for a dry run
    data_prepared: int | None = None  # distinct data preparations in this process (local, parallel 1)
    data_reused: int | None = None  # runs that reused one


def _groups(grid: Sequence[str] | Sequence[Sequence[str]]) -> list[list[str]]:
    """One group (a flat list of ``key=v1,v2`` texts) or several (a list of such lists)."""
    if not grid:
        raise SweepError("give at least one --grid key=v1,v2 ...")
    if all(isinstance(g, str) for g in grid):
        return [[str(g) for g in grid]]
    return [[g] if isinstance(g, str) else list(g) for g in grid]


def write_heldout(base: Config, path: Path) -> int:
    """The base config's eval split as a preference file (prompt-chat JSONL): the pairs every run and the
    base model are evaluated on, there for the user to read or to pass to ``prefkit eval``."""
    from prefkit.data.examples import PreferenceExample
    from prefkit.data.formats import get_format
    from prefkit.data.load import prepare_data
    from prefkit.data.readers import write_records
    from prefkit.model.loader import load_tokenizer
    from prefkit.train.recipe import model_path

    tokenizer = load_tokenizer(model_path(base), trust_remote_code=base.trust_remote_code)
    pairs = [e for e in prepare_data(base, tokenizer).eval_examples if isinstance(e, PreferenceExample)]
    if not pairs:
        raise SweepError("the base config's eval split holds no usable preference pairs to rank runs on")
    writer = get_format("prompt-chat", "dpo")
    write_records([writer.to_record(e) for e in pairs], path)
    return len(pairs)


def check_working_folder(spec: SweepSpec) -> None:
    """A sweep whose config names relative paths (found from the folder it was started in) goes on only
    from that folder: from another, the same names would mean other files."""
    here = Path.cwd().resolve()
    if Path(spec.cwd).resolve() == here:
        return
    relative = [
        f"{key}: {value}"
        for key, value in spec.base.items()
        if isinstance(value, str)
        and value
        and not Path(value).is_absolute()
        and (Path(spec.cwd) / value).exists()
    ]
    if relative:
        raise SweepError(
            f"this sweep was started in {spec.cwd}, and its config names paths relative to it "
            f"({'; '.join(relative)}): run prefkit sweep from {spec.cwd}"
        )


def _version_note(existing: SweepSpec) -> str:
    """A new prefkit can resolve the same file to other values (a new key with its default)."""
    if existing.prefkit_version == prefkit.__version__:
        return ""
    return (
        f"\nThis sweep was planned by prefkit {existing.prefkit_version}, this is {prefkit.__version__}: "
        "a setting that differs without your editing the file comes from that; finish the sweep with "
        f"prefkit {existing.prefkit_version}, or start a new one."
    )


def _check_backend(backend: str, parallel: int, callbacks: list[TrainerCallback] | None) -> None:
    if backend not in BACKENDS:
        raise SweepError(f"--backend {backend}: expected one of {', '.join(BACKENDS)}")
    if parallel < 1:
        raise SweepError(f"--parallel {parallel}: expected a number of processes from 1 up")
    if backend == "ray" and parallel != 1:
        raise SweepError(
            "--parallel is for --backend local; on Ray the cluster's resources set how many runs run at once"
        )
    if callbacks and (backend != "local" or parallel != 1):
        raise SweepError(
            "trainer callbacks reach only runs trained in this process (backend local, parallel 1)"
        )


def run_sweep(
    config: str | Path,
    grid: Sequence[str] | Sequence[Sequence[str]],
    *,
    overrides: Sequence[str] = (),
    output_dir: str | Path | None = None,
    metric: str = DEFAULT_METRIC,
    trials: int | None = None,
    random: bool = False,
    seed: int = 0,
    evaluation: EvalSettings | None = None,
    backend: str = "local",
    parallel: int = 1,
    ray_address: str | None = None,
    gpus_per_run: float | None = None,
    callbacks: list[TrainerCallback] | None = None,
    dry_run: bool = False,
) -> SweepResult:
    """Run the sweep the module docstring describes and return where each run stands.

    ``grid``: one group of ``key=v1,v2`` texts, or a list of groups (their runs added together).
    ``output_dir``: the sweep folder (default: the base config's ``output_dir`` + ``-sweep``).
    ``overrides``: ``key=value`` applied to the base config for every run. ``trials``/``random``/``seed``:
    the first N combinations, or N drawn at random with the seed. ``evaluation``: the held-out data and
    generation settings. ``dry_run``: plan and validate only; nothing is written."""
    _check_backend(backend, parallel, callbacks)
    groups = _groups(grid)
    combos = select(combinations([parse_group(g) for g in groups]), trials, random, seed)
    base = load_base(config, overrides)
    evaluation = evaluation or EvalSettings()
    problem = eval_data_problem(base, {k for c in combos for k, _ in c.items}, evaluation)
    if problem:
        raise SweepError(problem)
    resolved_eval = resolved_evaluation(base, evaluation)
    metric = canonical_metric(metric, resolved_eval["scorers"])
    sweep_dir = Path(output_dir if output_dir is not None else f"{base.output_dir.rstrip('/')}-sweep")

    # Planned (every combination's config checked) before anything is written, then again under the
    # lock: a sweep into the same folder finishing meanwhile may have added runs.
    planned = _plan(config, overrides, base, resolved_eval, metric, combos, sweep_dir)
    if dry_run:
        return planned[1]
    with locked(sweep_dir):
        spec, result, new = _plan(config, overrides, base, resolved_eval, metric, combos, sweep_dir)
        spec.runs += new
        record_command(spec, groups, trials, random, seed)
        spec.write(sweep_dir)
        _execute(spec, sweep_dir, base, result, backend, parallel, ray_address, gpus_per_run, callbacks)
        result.leaderboard = write_leaderboard(spec, sweep_dir)
    return result


def _plan(
    config: str | Path,
    overrides: Sequence[str],
    base: Config,
    resolved_eval: dict[str, Any],
    metric: str,
    combos: Sequence[Combination],
    sweep_dir: Path,
) -> tuple[SweepSpec, SweepResult, list[PlannedRun]]:
    """The sweep's spec (the folder's own, if it is a sweep folder already), where each combination's run
    stands, and the runs new to the folder."""
    spec = new_spec(config, overrides, base, resolved_eval, metric)
    if check_sweep_folder(sweep_dir):
        existing = SweepSpec.read(sweep_dir)
        changed = differences(existing, spec)
        if changed:
            raise SweepError(
                f"{sweep_dir} holds a sweep of another base config or evaluation; its runs would not be "
                "comparable with these:\n" + "\n".join(changed) + "\nUse another --output-dir for this one "
                "(prefkit never deletes a sweep's runs)." + _version_note(existing)
            )
        check_working_folder(existing)
        # The same base config (every resolved value equal), perhaps from a moved file: read it from here on.
        existing.config_file, existing.overrides, existing.metric = spec.config_file, spec.overrides, metric
        spec = existing
    planned, new = plan_runs(spec.config_file, spec.overrides, combos, spec.runs)
    # The leaderboard ranks every run of the folder, those of earlier commands too.
    check_metric_for_grid(metric, {k for run in [*spec.runs, *new] for k in run.settings})
    skipped = [r.name for r in planned if run_status(sweep_dir / r.name) == EVALUATED]
    return spec, SweepResult(sweep_dir, planned, skipped), new


def _execute(
    spec: SweepSpec,
    sweep_dir: Path,
    base: Config,
    result: SweepResult,
    backend: str,
    parallel: int,
    ray_address: str | None,
    gpus_per_run: float | None,
    callbacks: list[TrainerCallback] | None,
) -> None:
    """The held-out pairs, the base model's evaluation, then every run not evaluated yet."""
    from prefkit.data.reuse import shared_preparation

    state = SweepState(sweep_dir)

    def record(name: str, attempt: Attempt) -> None:
        state.record(name, attempt)
        result.attempts[name] = attempt
        if attempt.ok:
            logger.info("sweep: %s done in %.0f s", name, attempt.seconds)
        else:
            logger.warning("sweep: %s failed (%s); the sweep goes on", name, attempt.error)
        write_leaderboard(spec, sweep_dir, plots=False)

    def dispatch(jobs: list[str]) -> None:
        if backend == "ray":
            run_on_ray(jobs, sweep_dir, spec.cwd, record, ray_address, gpus_per_run)
        elif parallel > 1:
            run_in_subprocesses(jobs, sweep_dir, spec.cwd, record, min(parallel, len(jobs)))
        else:
            run_in_process(jobs, sweep_dir, record, callbacks)

    with shared_preparation() as shared:
        if spec.evaluation["data"] == HELDOUT_FILE and not (sweep_dir / HELDOUT_FILE).is_file():
            count = write_heldout(base, sweep_dir / HELDOUT_FILE)
            logger.info("sweep: %d held-out pairs in %s", count, sweep_dir / HELDOUT_FILE)
        if not baseline_done(sweep_dir):
            # First and alone: every run starts from this model and is evaluated the same way, so what
            # fails here (a missing adapter, a broken scorer) would fail every run.
            dispatch([BASELINE])
            if not result.attempts[BASELINE].ok:
                raise SweepError(
                    f"the evaluation of the model the runs start from failed, so every run would: "
                    f"{result.attempts[BASELINE].error}"
                )
        check_metric_measured(spec.metric, baseline_metrics(sweep_dir))
        jobs = [r.name for r in result.runs if r.name not in result.skipped]
        logger.info(
            "sweep: %d runs in %s (%d evaluated already, %d to do)",
            len(result.runs),
            sweep_dir,
            len(result.skipped),
            len(jobs),
        )
        if jobs:
            dispatch(jobs)
        if backend == "local" and parallel == 1:
            result.data_prepared, result.data_reused = shared.computed, shared.reused
