"""`prefkit sweep`: a thin skin over prefkit.sweep.run_sweep (parse, call, print)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from prefkit.cli.common import console, fail, reported, setup_logging
from prefkit.cli.options import GuardLimits
from prefkit.errors import EXIT_RUNS_FAILED
from prefkit.sweep.ranking import DEFAULT_METRIC

if TYPE_CHECKING:
    from prefkit.sweep import SweepResult

sweep_app = typer.Typer()


@sweep_app.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": False},
    help="Sweep settings over one config: every combination (or --trials N --random of them) is a normal "
    "prefkit run in its own folder under one sweep folder, evaluated on held-out pairs, and ranked in "
    "leaderboard.md/.json by a held-out metric with reward-hacking guards. A rerun skips finished runs, "
    "resumes an interrupted one and does the rest.\n\n"
    "prefkit sweep CONFIG.yaml \\[key=value ...] --grid key=v1,v2 \\[key=v1,v2 ...] \\[--grid ...]\n\n"
    "The keys after one --grid are crossed (every combination); several --grid groups add their runs "
    "together. See docs/sweeps.md.",
)
@reported
def sweep(
    tokens: Annotated[
        list[str],
        typer.Argument(
            metavar="CONFIG [key=value ...] --grid key=v1,v2 ...",
            help="The base config, fixed overrides, then one or more --grid groups.",
        ),
    ],
    metric: Annotated[
        str, typer.Option(help="Held-out metric to rank by (accuracy, relevance, rouge_l, socratic, ...).")
    ] = DEFAULT_METRIC,
    trials: Annotated[
        int | None, typer.Option(help="Run only N combinations: the first N, or with --random N drawn.")
    ] = None,
    random: Annotated[
        bool, typer.Option("--random", help="Draw the --trials combinations at random (seeded).")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the --random draw.")] = 0,
    output_dir: Annotated[
        Path | None, typer.Option(help="The sweep folder (default: the config's output_dir + '-sweep').")
    ] = None,
    backend: Annotated[str, typer.Option(help="local, or ray (pip install 'prefkit\\[ray]').")] = "local",
    parallel: Annotated[int, typer.Option(help="local: runs at once, each in its own process.")] = 1,
    ray_address: Annotated[
        str | None,
        typer.Option(help="ray: the cluster to join (default: $RAY_ADDRESS, else a local instance)."),
    ] = None,
    gpus_per_run: Annotated[
        float | None, typer.Option(help="ray: GPUs per run (default: 1 if the cluster has GPUs, else 0).")
    ] = None,
    eval_file: Annotated[
        Path | None, typer.Option(help="Held-out pairs to rank on (default: the config's eval split).")
    ] = None,
    eval_max_samples: Annotated[
        int | None, typer.Option(min=1, help="Evaluate on at most N held-out pairs.")
    ] = None,
    eval_generate: Annotated[
        int | None, typer.Option(min=1, help="Reply to at most N held-out prompts (guards read replies).")
    ] = None,
    max_new_tokens: Annotated[
        int | None,
        typer.Option(help="Most new tokens per reply (default: the config's eval_max_new_tokens)."),
    ] = None,
    scorer: Annotated[
        list[str] | None,
        typer.Option(help="Extra scorer (socratic, module:function, file.py:function); repeat."),
    ] = None,
    guard_limit: GuardLimits = None,
    dry_run: Annotated[bool, typer.Option(help="Validate and list the runs; write nothing.")] = False,
) -> None:
    from prefkit.score.guards import parse_guard_limits
    from prefkit.sweep import EvalSettings, run_sweep
    from prefkit.sweep.grid import parse_command_line

    setup_logging()
    command = parse_command_line(tokens)
    result = run_sweep(
        command.config,
        command.groups,
        overrides=command.overrides,
        output_dir=output_dir,
        metric=metric,
        trials=trials,
        random=random,
        seed=seed,
        evaluation=EvalSettings(
            eval_file=str(eval_file) if eval_file else None,
            max_samples=eval_max_samples,
            generate=eval_generate,
            max_new_tokens=max_new_tokens,
            scorers=tuple(scorer or ()),
            guard_limits=parse_guard_limits(guard_limit or []),
        ),
        backend=backend,
        parallel=parallel,
        ray_address=ray_address,
        gpus_per_run=gpus_per_run,
        dry_run=dry_run,
    )
    _print_result(result)


def _print_result(result: SweepResult) -> None:
    """The runs (a dry run), or the leaderboard's top ten, the best run and the runs that failed."""
    if result.leaderboard is None:  # dry run
        for run in result.runs:
            done = " (evaluated)" if run.name in result.skipped else ""
            console.print(f"{result.output_dir / run.name}{done}", highlight=False)
        console.print(f"{len(result.runs)} runs; {len(result.skipped)} already evaluated")
        return
    board = result.leaderboard
    for row in board.rows[:10]:
        rank = f"{row.rank:>3}" if row.rank else "  —"
        value = f"{board.metric} {row.value:.3f}" if row.value is not None else row.status
        flag = f"  guard: {row.guard_failures[0]}" if row.guard_failures else ""
        error = f"  {(row.error or '').splitlines()[0][:120]}" if row.error else ""
        console.print(f"{rank}  {row.name}  {value}{flag}{error}", highlight=False)
    if board.best is not None:
        console.print(f"best: {result.output_dir / board.best.name}", highlight=False)
    console.print(f"leaderboard: {result.output_dir / 'leaderboard.md'}", highlight=False)
    failed = [name for name, attempt in result.attempts.items() if not attempt.ok]
    if failed:
        raise fail(
            f"{len(failed)} runs failed: {', '.join(failed)}; rerun the same command to retry them",
            EXIT_RUNS_FAILED,
        )
