"""`prefkit data check` and `prefkit data convert`: a thin skin over prefkit.data.load.check_data and
prefkit.data.convert."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from prefkit.cli.common import console, reported, setup_logging
from prefkit.errors import EXIT_BAD_DATA

data_app = typer.Typer(no_args_is_help=True, help="Check and convert datasets.")


def _print_stats(title: str, stats: dict) -> None:
    present = {k: v for k, v in stats.items() if v}
    if not present:
        return
    table = Table(title=title, title_justify="left")
    for column in ("", "min", "mean", "p50", "p95", "max"):
        table.add_column(column, justify="right")
    for name, s in present.items():
        table.add_row(name, str(s.min), f"{s.mean:.0f}", f"{s.p50:.0f}", str(s.p95), str(s.max))
    console.print(table)


@data_app.command("check")
@reported
def data_check(
    files: Annotated[
        list[Path], typer.Argument(help="Data files (.jsonl, .json, .parquet, .csv) or folders.")
    ],
    stage: Annotated[str | None, typer.Option(help="dpo or sft (default: detected from the file).")] = None,
    model: Annotated[str | None, typer.Option(help="Model whose tokenizer measures token lengths.")] = None,
    cutoff_len: Annotated[int, typer.Option(help="Token budget per example (with --model).")] = 2048,
    template: Annotated[
        str | None, typer.Option(help="Named chat template (default: the tokenizer's).")
    ] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="Force a format instead of detecting it.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    limit: Annotated[int, typer.Option(help="Print at most this many problems (0: all).")] = 200,
) -> None:
    """Report on a dataset. Exit 0 when every example is usable, 1 when any is not."""
    from prefkit.data.load import check_data
    from prefkit.env import cache_dir
    from prefkit.model.loader import load_tokenizer
    from prefkit.model.sources import resolve_first

    setup_logging()
    tokenizer = load_tokenizer(resolve_first(model, cache_dir())) if model else None
    report = check_data(
        files, stage=stage, tokenizer=tokenizer, cutoff_len=cutoff_len, template=template, format=fmt
    )
    if as_json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
        raise typer.Exit(0 if report.ok else EXIT_BAD_DATA)

    for path, detected in report.formats.items():
        console.print(f"[bold]{path}[/]: format [cyan]{detected or '?'}[/] ({report.stage})")
    console.print(
        f"records {report.records}, usable {report.usable}, unusable {len(report.unusable)}; "
        f"duplicates {report.count('duplicate')}, "
        f"chosen identical to rejected {report.count('identical_pair')}"
    )
    _print_stats("characters", report.char_stats)
    _print_stats("tokens (before truncation)", report.token_stats)
    if report.cutoff_len is not None:
        line = f"over cutoff_len {report.cutoff_len}: {report.over_cutoff}"
        if report.over_cutoff_by:
            by = report.over_cutoff_by
            line += f" (by {by.min}..{by.max} tokens, mean {by.mean:.0f})"
        console.print(line)
    shown = report.problems if limit <= 0 else report.problems[:limit]
    for problem in shown:
        style = "red" if problem.severity == "error" else "yellow"
        console.print(f"[{style}]{problem}[/]", highlight=False, markup=True, soft_wrap=True)
    if len(shown) < len(report.problems):
        console.print(f"... {len(report.problems) - len(shown)} more (use --limit 0 or --json)")
    console.print(
        "[green]clean[/]" if report.ok else f"[red]{len(report.unusable)} unusable example(s) or file(s)[/]"
    )
    raise typer.Exit(0 if report.ok else EXIT_BAD_DATA)


@data_app.command("convert")
@reported
def data_convert(
    src: Annotated[Path, typer.Argument(help="Input file.")],
    dst: Annotated[Path, typer.Argument(help="Output file (.jsonl, .json, .parquet, .csv).")],
    to: Annotated[str, typer.Option(help="Target format, e.g. prompt-text, prompt-chat, sharegpt, alpaca.")],
    stage: Annotated[str | None, typer.Option(help="Stage of the target format: dpo or sft.")] = None,
    source_format: Annotated[str | None, typer.Option("--from", help="Force the input's format.")] = None,
    skip_bad: Annotated[bool, typer.Option(help="Convert the usable records and list the rest.")] = False,
    force: Annotated[bool, typer.Option(help="Overwrite an existing output file.")] = False,
) -> None:
    """Convert a dataset between formats."""
    from prefkit.data.convert import convert_file

    setup_logging()
    result = convert_file(
        src, dst, to, stage=stage, source_format=source_format, skip_bad=skip_bad, overwrite=force
    )
    for problem in result.problems:
        print(f"skipped {problem}", file=sys.stderr)
    console.print(f"wrote {result.written} examples to {dst} ({to})")
