"""The `prefkit` command: a thin skin over package functions (parse, call, print; no logic here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from prefkit.cli.arena import arena_app
from prefkit.cli.common import (
    Options,
    console,
    fail,
    internal_error,
    reported,
    setup_logging,
)
from prefkit.cli.data import data_app
from prefkit.cli.options import GuardLimits, Template
from prefkit.cli.serve import serve_app
from prefkit.cli.sweep import sweep_app
from prefkit.cli.use import use_app

if TYPE_CHECKING:
    from prefkit.config import Config
    from prefkit.infer.sampling import SamplingSettings


EVAL_DIR = Path("prefkit-eval")  # `prefkit eval`'s default --output-dir

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="SFT and preference optimisation (DPO, hinge, IPO, KTO-pair, ORPO, SimPO) for small LMs.",
)
app.add_typer(data_app, name="data")
app.add_typer(use_app)  # chat, generate, export
app.add_typer(serve_app)  # serve, ui
app.add_typer(sweep_app)  # sweep
app.add_typer(arena_app, name="arena")  # arena stats, arena export


@app.callback()
def _options(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Debug logging; print tracebacks of internal errors.")
    ] = False,
) -> None:
    Options.verbose = verbose


@app.command()
@reported
def env(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    remeasure: Annotated[
        bool, typer.Option(help="Time the CPU's bf16 and fp32 matmuls again (measured once, then cached).")
    ] = False,
) -> None:
    """Versions, device (CPU/CUDA, name, memory), bf16 support and the cache folder in use."""
    from prefkit.env import cpu_bf16_native, cpu_matmul_rates, environment_report

    if remeasure and cpu_bf16_native():
        cpu_matmul_rates(remeasure=True)
    report = environment_report()
    if as_json:
        print(json.dumps(report, indent=2))
        return
    table = Table(show_header=False, box=None)
    for name, version in report["versions"].items():
        table.add_row(name, version or "[dim]not installed[/]")
    d = report["device"]
    memory = f"{d['memory_gib']} GiB" if d["memory_gib"] else "?"
    table.add_row("device", f"{d['device'].upper()}: {d['name']} (x{d['count']}, {memory})")
    table.add_row("bf16", "yes" if d["bf16"] else "no")
    if "bf16_faster_than_fp32" in d:  # a CPU: what `auto` and the quickstart choose by
        faster = "yes" if d["bf16_faster_than_fp32"] else "no (auto picks fp32)"
        if rates := d.get("matmul_gflops"):
            faster += f": bf16 {rates['bf16']} GFLOP/s, fp32 {rates['fp32']} (measured once; --remeasure)"
        table.add_row("bf16 faster than fp32", faster)
    table.add_row("fp16", "yes" if d["fp16"] else "no (needs CUDA)")
    table.add_row("cache", f"{report['cache_dir']} ({report['cache_source']})")
    console.print(table)


@app.command(context_settings={"allow_extra_args": False})
@reported
def train(
    config: Annotated[Path, typer.Argument(help="YAML config file.")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides.")] = None,
    nproc: Annotated[int, typer.Option(help="Processes to run (DDP via torchrun; gloo on CPU).")] = 1,
) -> None:
    """Train: `stage: sft` or `stage: dpo` with any pref_loss. Resumes an unfinished run by itself."""
    import subprocess

    from prefkit.config import load_config
    from prefkit.train.distributed import torchrun_command, world_size

    setup_logging()
    if nproc > 1 and world_size() == 1:
        command = torchrun_command(nproc, ["train", str(config), *(overrides or [])])
        raise typer.Exit(subprocess.call(command))
    cfg = load_config(config, overrides or [])
    _print_resolved(cfg)
    from prefkit.train.recipe import train as run_training

    result = run_training(cfg)
    console.print(
        f"finished: {result.global_step} steps in {result.train_seconds:.0f} s; model in {result.output_dir}"
    )


@app.command()
@reported
def quickstart(
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides of the recipe.")] = None,
    output_dir: Annotated[Path, typer.Option(help="Where the model, plots and reports go.")] = Path(
        "prefkit-quickstart"
    ),
    method: Annotated[
        str | None,
        typer.Option(help="pref_loss instead of the recipe's: sigmoid, hinge, ipo, kto_pair, orpo or simpo."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a finished quickstart in --output-dir.")] = False,
) -> None:
    """Train SmolLM2-135M on the bundled Socratic-tutor pairs and show what changed (minutes on a CPU)."""
    from prefkit.quickstart.recipe import run_quickstart

    setup_logging()
    report = run_quickstart(output_dir, method=method, overwrite=overwrite, overrides=overrides or [])
    from prefkit.quickstart.report import LANGUAGE_ROWS

    table = Table(
        title=f"{report['model']} + LoRA, {report['method']}: held-out results", title_justify="left"
    )
    langs = list(report["languages"])
    table.add_column("")
    for lang in langs:
        table.add_column(f"{lang} before", justify="right")
        table.add_column(f"{lang} after", justify="right")
    b, a = report["before"], report["after"]
    accuracy = [f"{b['preference_accuracy']:.2f}", f"{a['preference_accuracy']:.2f}"]
    table.add_row("preference accuracy (all pairs)", *accuracy, *([""] * (2 * len(langs) - 2)))
    for key, label, fmt in LANGUAGE_ROWS:
        cells = [
            f"{report['languages'][lang][side][key]:{fmt}}" for lang in langs for side in ("before", "after")
        ]
        table.add_row(label, *cells)
    console.print(table)
    ex = report["example"]
    console.print(f"[bold]prompt:[/] {ex['prompt']}", highlight=False)
    console.print(f"[bold]before:[/] {ex['before']}", highlight=False)
    console.print(f"[bold]after:[/]  {ex['after']}", highlight=False)
    console.print(
        f"trained {report['steps']} steps in {report['train_seconds']:.0f} s; "
        f"total {report['total_seconds']:.0f} s; peak memory {report['peak_memory_gib']:.2f} GiB. "
        f"Reports and plots: {output_dir}/quickstart_report.md"
    )
    from prefkit.quickstart.report import verdict_lines

    for line in verdict_lines(report):
        console.print(f"[bold]{line}[/]", highlight=False)
    if report["missed_targets"]:
        console.print(f"[yellow]targets missed: {'; '.join(report['missed_targets'])}[/]", highlight=False)
    else:
        console.print("every target met", highlight=False)


@app.command("eval")
@reported
def evaluate(
    data: Annotated[list[Path], typer.Option(help="Held-out preference pairs (file or folder; repeat).")],
    model: Annotated[
        str | None,
        typer.Option(help="Base model: builtin alias, folder, .gguf or hub id (default: the adapter's)."),
    ] = None,
    adapter: Annotated[str | None, typer.Option(help="LoRA adapter folder on top of --model.")] = None,
    replies: Annotated[
        Path | None,
        typer.Option(help="Score the replies in this file (prompt + reply records) instead of generating."),
    ] = None,
    baseline_replies: Annotated[
        Path | None, typer.Option(help="The baseline's replies, to compare with --replies.")
    ] = None,
    output_dir: Annotated[
        Path, typer.Option(help="Where eval.json, eval.md, generations.jsonl go.")
    ] = EVAL_DIR,
    max_samples: Annotated[int | None, typer.Option(help="Evaluate at most this many pairs.")] = None,
    generate: Annotated[int | None, typer.Option(help="Reply to at most this many prompts.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Most new tokens per reply.")] = 128,
    do_sample: Annotated[bool, typer.Option(help="Sample instead of greedy decoding.")] = False,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 1.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed for sampling.")] = 0,
    scorer: Annotated[
        list[str] | None, typer.Option(help="Extra scorer: socratic, module:function or file.py:function.")
    ] = None,
    baseline: Annotated[
        bool,
        typer.Option(help="Also evaluate the model the run started from (the base, or its SFT adapter)."),
    ] = False,
    judge_url: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL of a judge.")] = None,
    judge_model: Annotated[str | None, typer.Option(help="The judge's model name.")] = None,
    pref_loss: Annotated[str | None, typer.Option(help="Method whose implicit reward to report.")] = None,
    beta: Annotated[
        float | None, typer.Option(help="Its beta (default: the adapter's run, else 0.1).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Pairs and prompts per batch.")] = 8,
    dtype: Annotated[
        str, typer.Option(help="auto (the run's precision, else the machine's), bf16, fp16 or fp32.")
    ] = "auto",
    guard_limit: GuardLimits = None,
    template: Template = None,
    force: Annotated[bool, typer.Option(help="Replace an earlier evaluation in --output-dir.")] = False,
) -> None:
    """Evaluate a model (+ adapter), or given replies, on held-out pairs: preference metrics, scored
    replies and the guards they fail."""
    from prefkit.evaluate.judge import JudgeSettings
    from prefkit.evaluate.run import evaluate_model
    from prefkit.score.guards import parse_guard_limits

    setup_logging()
    if (judge_url is None) != (judge_model is None):
        raise fail("--judge-url and --judge-model go together")
    result = evaluate_model(
        model,
        [str(d) if str(d).startswith("builtin:") else d for d in data],
        adapter=adapter,
        replies=replies,
        baseline_replies=baseline_replies,
        output_dir=output_dir,
        max_samples=max_samples,
        generate_samples_n=generate,
        scorers=scorer or [],
        sampling=_sampling(max_new_tokens, do_sample, temperature, top_p, seed),
        baseline=baseline,
        judge=JudgeSettings(judge_url, judge_model) if judge_url and judge_model else None,
        pref_loss=pref_loss,
        beta=beta,
        dtype=dtype,
        guard_limits=parse_guard_limits(guard_limit or []),
        batch_size=batch_size,
        template=template,
        force=force,
    )
    _print_evaluation(result.report)
    console.print(f"reports: {output_dir}/eval.md, eval.json, generations.jsonl")


def _sampling(
    max_new_tokens: int, do_sample: bool, temperature: float, top_p: float, seed: int
) -> SamplingSettings:
    """`prefkit eval`'s decoding: greedy unless --do-sample, then seeded."""
    from prefkit.infer.sampling import SamplingSettings

    return SamplingSettings(
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        temperature=temperature,
        top_p=top_p,
        seed=seed if do_sample else None,
    )


def _print_evaluation(report: dict[str, Any]) -> None:
    """The held-out figures, the baseline's beside them, and every guard the model fails."""
    base = report["baseline"]
    table = Table(title="held-out results", title_justify="left")
    for column in ("", *(["baseline"] if base else []), "model"):
        table.add_column(column, justify="right" if column else "left")
    for section in ("preference", "generation"):
        for key, value in report["model"][section].items():
            if key in ("pairs", "length_chars", "distinct_1"):
                continue
            row = [f"{base[section][key]:.3f}" if base and key in base[section] else "—"] if base else []
            table.add_row(key, *row, f"{value:.3f}")
    for key, value in (report["judge"] or {}).items():
        table.add_row(key, *([""] if base else []), f"{value:.3f}")
    console.print(table)
    if report["failed_guards"]:
        console.print("[yellow]failed guards:[/]", highlight=False)
        for failure in report["failed_guards"]:
            console.print(f"  {failure}", highlight=False)
    else:
        console.print("every guard passes", highlight=False)


@app.command()
@reported
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (output_dir of prefkit train).")],
    output: Annotated[Path, typer.Option(help="Markdown file; plots are written beside it.")] = Path(
        "compare.md"
    ),
    force: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
) -> None:
    """Compare runs: final and best metrics, the settings that differ, overlaid plots."""
    from prefkit.evaluate.compare import compare_runs

    setup_logging()
    text = compare_runs(runs, output, force=force)
    print(text)
    console.print(f"written to {output}")


@app.command("config")
@reported
def show_config(
    config: Annotated[Path, typer.Argument(help="YAML config file.")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Validate a config and print every resolved value with where it came from."""
    from prefkit.config import load_config

    setup_logging()
    cfg = load_config(config, overrides or [])
    if as_json:
        print(json.dumps(cfg.resolved(), indent=2, ensure_ascii=False))
        return
    _print_resolved(cfg)


def _print_resolved(cfg: Config) -> None:
    """Every resolved value as YAML, with its source as a comment: readable, and a config to copy from."""
    resolved, sources = cfg.resolved(), cfg.sources()
    width = max(len(key) for key in resolved) + 2
    for key, value in resolved.items():
        print(f"{key + ':':<{width}} {json.dumps(value, ensure_ascii=False):<30} # {sources.get(key, '?')}")


def main() -> None:
    try:
        app()
    except Exception as err:  # a command without @reported: still a prefkit bug, reported as one
        raise SystemExit(internal_error(err).exit_code) from None
