"""The commands that use a trained model in a terminal or on files: `prefkit chat`, `generate` and `export`
(a thin skin over prefkit.infer.chat, prefkit.infer.batch and prefkit.infer.export); the servers are in
:mod:`prefkit.cli.serve`."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from prefkit.cli.common import fail, reported
from prefkit.cli.options import Device, Dtype, Model, Template, Threads, candidates

if TYPE_CHECKING:
    from prefkit.infer.sampling import SamplingSettings
    from prefkit.model.inference import LoadedModel

use_app = typer.Typer()

# Sampling, for chat and generate.
MaxNewTokens = Annotated[int, typer.Option(help="Longest reply, in tokens.")]
Temperature = Annotated[
    float | None,
    typer.Option(help="Sampling temperature; 0 is greedy. Default: the model's generation config."),
]
TopP = Annotated[
    float | None, typer.Option(help="Nucleus sampling: keep the smallest set of tokens with this mass.")
]
TopK = Annotated[int | None, typer.Option(help="Sample among the k most likely tokens (0: off).")]
RepetitionPenalty = Annotated[float | None, typer.Option(help="Penalty for repeated tokens (1: off).")]
Seed = Annotated[int | None, typer.Option(help="Seed for reproducible sampling.")]


def _settings(
    loaded: LoadedModel,
    max_new_tokens: int,
    temperature: float | None,
    top_p: float | None,
    top_k: int | None,
    repetition_penalty: float | None,
    seed: int | None,
) -> SamplingSettings:
    from prefkit.infer.sampling import default_settings

    return default_settings(
        loaded.model,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        repetition_penalty=repetition_penalty,
        seed=seed,
    )


def _describe(settings: SamplingSettings) -> str:
    if not settings.do_sample:
        return "greedy"
    return f"sampling: temperature {settings.temperature}, top_p {settings.top_p}, top_k {settings.top_k}"


@use_app.command()
@reported
def chat(
    model: Model,
    adapter: Annotated[
        Path | None, typer.Option(help="A LoRA adapter folder (what `prefkit train` wrote).")
    ] = None,
    system: Annotated[str | None, typer.Option(help="System message to start with.")] = None,
    template: Template = None,
    max_new_tokens: MaxNewTokens = 256,
    temperature: Temperature = None,
    top_p: TopP = None,
    top_k: TopK = None,
    repetition_penalty: RepetitionPenalty = None,
    seed: Seed = None,
    dtype: Dtype = "auto",
    device: Device = "auto",
    threads: Threads = None,
) -> None:
    """Chat with a model (and a trained adapter) in the terminal; replies stream as they are written."""
    from prefkit.cli.common import setup_logging
    from prefkit.infer.chat import ChatSession, run_chat
    from prefkit.model.adapters import parse_adapters
    from prefkit.model.inference import load_for_inference

    setup_logging()
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history for input())
    adapters = parse_adapters([str(adapter)]) if adapter else []
    loaded = load_for_inference(
        candidates(model), adapters, template=template, dtype=dtype, device=device, threads=threads
    )
    settings = _settings(loaded, max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed)
    session = ChatSession(loaded, settings, adapter=adapters[0].name if adapters else None, system=system)
    what = f"{model} + {adapter}" if adapter else model
    dtype_name = str(loaded.dtype).removeprefix("torch.")
    banner = f"prefkit chat: {what} ({loaded.device}, {dtype_name}, {_describe(settings)})"
    run_chat(session, banner=banner)


@use_app.command("generate")
@reported
def generate_cmd(
    model: Model,
    input: Annotated[
        Path, typer.Option("--input", help="Prompts: JSONL (or JSON/CSV/Parquet), one per record.")
    ],
    output: Annotated[Path, typer.Option("--output", help="Where the replies go (JSONL, input order).")],
    adapter: Annotated[Path | None, typer.Option(help="A LoRA adapter folder.")] = None,
    template: Template = None,
    batch_size: Annotated[
        int,
        typer.Option(help="Prompts decoded together, in fixed groups by position (replies depend on it)."),
    ] = 8,
    max_new_tokens: MaxNewTokens = 256,
    temperature: Temperature = None,
    top_p: TopP = None,
    top_k: TopK = None,
    repetition_penalty: RepetitionPenalty = None,
    seed: Seed = None,
    skip_bad: Annotated[
        bool, typer.Option(help="Generate for the usable records and list the others.")
    ] = False,
    force: Annotated[bool, typer.Option(help="Replace an existing output file (never the input).")] = False,
    dtype: Dtype = "auto",
    device: Device = "auto",
    threads: Threads = None,
) -> None:
    """Replies to a file of prompts: batched, resumable (rerun the same command after an interruption)."""
    from prefkit.cli.common import console, setup_logging
    from prefkit.infer.batch import PART_SUFFIX, check_files, generate_file
    from prefkit.model.adapters import parse_adapters
    from prefkit.model.inference import load_for_inference

    setup_logging()
    if batch_size < 1:
        raise fail("--batch-size must be at least 1")
    progress = _GenerateProgress()
    try:
        check_files(input, output, skip_bad=skip_bad, force=force)
        adapters = parse_adapters([str(adapter)]) if adapter else []
        loaded = load_for_inference(
            candidates(model), adapters, template=template, dtype=dtype, device=device, threads=threads
        )
        settings = _settings(loaded, max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed)
        result = generate_file(
            loaded,
            input,
            output,
            settings=settings,
            adapter=adapters[0].name if adapters else None,
            batch_size=batch_size,
            skip_bad=skip_bad,
            force=force,
            on_start=progress.on_start,
            on_done=progress.on_done,
        )
    except KeyboardInterrupt:
        progress.stop()
        print(
            f"interrupted; finished groups of replies are kept in {output}{PART_SUFFIX}: run the same "
            "command again to continue",
            file=sys.stderr,
        )
        raise typer.Exit(130) from None
    finally:
        progress.stop()
    for problem in result.skipped:
        print(f"skipped {problem}", file=sys.stderr)
    console.print(
        f"wrote {result.total} replies to {result.output} ({result.generated} generated now, "
        f"{result.resumed} from an earlier run; {_describe(settings)})"
    )


class _GenerateProgress:
    """`prefkit generate`'s progress bar on stderr: prompts done of all, tokens per second, time left."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("generating"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self.task: Any = None
        self.tokens = 0

    def on_start(self, total: int, done: int) -> None:
        if done:
            print(f"resuming: {done} of {total} prompts already done", file=sys.stderr)
        self.progress.start()
        self.task = self.progress.add_task("generate", total=total, completed=done, rate="")

    def on_done(self, prompts: int, tokens: int) -> None:
        self.tokens += tokens
        elapsed = self.progress.tasks[0].elapsed or 0
        rate = f"{self.tokens / elapsed:.1f} tok/s" if elapsed > 0 else ""
        self.progress.update(self.task, advance=prompts, rate=rate)

    def stop(self) -> None:
        self.progress.stop()


def _floats(values: list[str] | None) -> list[float] | None:
    if not values:
        return None
    out = []
    for value in values:
        for part in value.split(","):
            try:
                out.append(float(part))
            except ValueError:
                raise typer.BadParameter(f"{part!r} is not a number", param_hint="--weights") from None
    return out


@use_app.command()
@reported
def export(
    model: Model,
    adapter: Annotated[
        list[str], typer.Option(help="LoRA adapter folder(s), [NAME=]PATH; repeat to combine.")
    ],
    output: Annotated[
        Path, typer.Option(help="The folder to write (new or empty; --force replaces an earlier export).")
    ],
    weights: Annotated[
        list[str] | None,
        typer.Option(
            help="One weight per adapter (repeat, or comma-separated); default: equal, summing to 1."
        ),
    ] = None,
    combination: Annotated[
        str, typer.Option(help="How several adapters combine: cat (exact), svd or linear.")
    ] = "cat",
    dtype: Annotated[str, typer.Option(help="auto (the base model's), bf16, fp16 or fp32.")] = "auto",
    template: Template = None,
    force: Annotated[
        bool,
        typer.Option(help="Replace an earlier export (a folder with prefkit_export.json), nothing else."),
    ] = False,
) -> None:
    """Merge LoRA adapter(s) into the base model and write a plain transformers model folder."""
    from prefkit.cli.common import console, setup_logging
    from prefkit.infer.export import export_model
    from prefkit.model.adapters import parse_adapters

    setup_logging()
    result = export_model(
        candidates(model),
        parse_adapters(adapter),
        output,
        weights=_floats(weights),
        combination=combination,
        dtype=dtype,
        template=template,
        force=force,
    )
    merged = ", ".join(f"{name} x {w:g}" for name, w in zip(result.adapters, result.weights, strict=True))
    console.print(f"wrote {result.output} ({result.dtype}; merged {merged}): {', '.join(result.files)}")
