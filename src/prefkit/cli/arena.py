"""`prefkit arena stats` and `prefkit arena export`: the blind arena's votes (RUNS_DIR/arena/votes.jsonl,
written by the web page's Arena tab) as figures, and as the next round's preference data."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from prefkit.cli.common import console, fail, reported

arena_app = typer.Typer(
    help="The web page's blind arena: win rates and ratings with intervals (stats), and the votes as "
    "preference pairs for the next round of training (export). See docs/human-eval.md."
)

Votes = Annotated[
    Path,
    typer.Argument(
        metavar="RUNS_DIR",
        help="The folder the page served (--runs): its arena/votes.jsonl is read. A votes file works too.",
    ),
]


def _votes_file(path: Path) -> Path:
    from prefkit.arena.votes import votes_path

    if path.is_file():
        return path
    if not path.is_dir():
        raise fail(f"{path}: no such folder (name the folder the page served with --runs, or a votes file)")
    return votes_path(path)


@arena_app.command()
@reported
def stats(
    runs: Votes,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    plot: Annotated[
        Path | None, typer.Option(help="Where the picture goes (default: arena/stats.png beside the votes).")
    ] = None,
    no_plot: Annotated[bool, typer.Option("--no-plot", help="Draw no picture.")] = False,
    bootstrap: Annotated[
        int, typer.Option(min=0, help="Resamples of the votes for the ratings' intervals (0: Laplace only).")
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the resampling.")] = 0,
) -> None:
    """Per model: wins, losses, ties, win rate and Bradley-Terry rating with 95% intervals; per pair: the
    head-to-head rate; for the top two, how many more votes separate them; checks on the voters."""
    from prefkit.arena.report import format_stats, plot_stats
    from prefkit.arena.stats import arena_stats
    from prefkit.arena.votes import read_votes

    source = _votes_file(runs)
    read = read_votes(source)
    for warning in read.warnings():
        print(warning, file=sys.stderr)
    figures = arena_stats(read.votes, bootstrap=bootstrap, seed=seed)
    picture = None
    if read.votes and not no_plot:
        target = plot or source.with_name("stats.png")
        try:
            picture = plot_stats(figures, target)
        except (OSError, ValueError) as err:  # the figures matter more than the picture: say so, go on
            reason = err.strerror if isinstance(err, OSError) and err.strerror else err
            print(f"no plot: cannot write {target}: {reason}", file=sys.stderr)
    if as_json:
        extra = {
            "votes_file": str(source),
            "plot": picture and str(picture),
            "skipped_lines": read.warnings(),
        }
        print(json.dumps({**figures.to_json(), **extra}))
        return
    console.print(f"{source}", markup=False, highlight=False)
    console.print(format_stats(figures), highlight=False, markup=False)
    if picture is not None:
        console.print(f"plot: {picture}", markup=False, highlight=False)


@arena_app.command()
@reported
def export(
    runs: Votes,
    output: Annotated[Path, typer.Option("--output", help="The pairs file to write (JSONL).")],
    model: Annotated[
        list[str] | None,
        typer.Option(help="Only votes between these models (name two or more; repeatable)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """The decisive votes as prompt/chosen/rejected pairs that `prefkit data check` and `prefkit train`
    read; ties, both-bad votes and pairs the data checks would refuse are left out and counted."""
    from prefkit.arena.export import export_pairs

    result = export_pairs(_votes_file(runs), output, models=model or (), force=force)
    if as_json:
        print(json.dumps(result.to_json()))
        return
    for line in result.skipped_lines:
        print(line, file=sys.stderr)
    for line in result.refused:
        print(f"left out: {line}", file=sys.stderr)
    console.print(
        f"wrote {result.written} pairs to {result.output}; left out: {result.summary()}", markup=False
    )
    if result.cut_off:
        console.print(
            f"{result.cut_off} chosen replies were cut off at max_tokens: training on many of them teaches "
            "the model to stop mid-sentence",
            highlight=False,
            markup=False,
        )
    if result.contradicting:
        console.print(
            f"{result.contradicting} pairs contradict another vote on the same prompt and replies "
            "(both are kept)",
            highlight=False,
            markup=False,
        )
