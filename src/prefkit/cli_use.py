"""The commands that use a trained model: `prefkit chat`, `generate`, `export`, `serve` and `ui` (a thin
skin over prefkit.chat, prefkit.batch_generate, prefkit.export, prefkit.serve and prefkit.ui)."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from prefkit.cli_common import fail, reported

if TYPE_CHECKING:
    from prefkit.generate import SamplingSettings
    from prefkit.inference import LoadedModel

use_app = typer.Typer()

Model = Annotated[
    str,
    typer.Option(
        "--model",
        help="Base model: a builtin alias (smollm2-135m-instruct), a folder, a .gguf file or a hub id; "
        "comma-separated candidates are tried in order.",
    ),
]
Template = Annotated[
    str | None,
    typer.Option(
        help="Named chat template (chatml, llama3, qwen, gemma, mistral) for tokenizers without one."
    ),
]
Dtype = Annotated[str, typer.Option(help="auto (bf16 where fast, else fp32/fp16), bf16, fp16 or fp32.")]
Device = Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda or cuda:N.")]
Threads = Annotated[
    int | None,
    typer.Option(help="CPU threads for PyTorch (default: one per core; fewer on a busy shared CPU)."),
]
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
ApiKey = Annotated[
    str | None,
    typer.Option(
        envvar="PREFKIT_API_KEY",
        help="Require 'Authorization: Bearer KEY' on /v1 and /ui/api (or $PREFKIT_API_KEY).",
    ),
]
LogLevel = Annotated[str, typer.Option(help="uvicorn log level: debug, info, warning, error.")]


def _candidates(model: str) -> str | list[str]:
    names = [m.strip() for m in model.split(",") if m.strip()]
    return names[0] if len(names) == 1 else names


def _settings(
    loaded: LoadedModel,
    max_new_tokens: int,
    temperature: float | None,
    top_p: float | None,
    top_k: int | None,
    repetition_penalty: float | None,
    seed: int | None,
) -> SamplingSettings:
    from prefkit.generate import default_settings

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
    from prefkit.chat import ChatSession, run_chat
    from prefkit.cli_common import setup_logging
    from prefkit.inference import load_for_inference, parse_adapters

    setup_logging()
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history for input())
    adapters = parse_adapters([str(adapter)]) if adapter else []
    loaded = load_for_inference(
        _candidates(model), adapters, template=template, dtype=dtype, device=device, threads=threads
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
    batch_size: Annotated[int, typer.Option(help="Prompts decoded together.")] = 8,
    max_new_tokens: MaxNewTokens = 256,
    temperature: Temperature = None,
    top_p: TopP = None,
    top_k: TopK = None,
    repetition_penalty: RepetitionPenalty = None,
    seed: Seed = None,
    skip_bad: Annotated[
        bool, typer.Option(help="Generate for the usable records and list the others.")
    ] = False,
    force: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
    dtype: Dtype = "auto",
    device: Device = "auto",
    threads: Threads = None,
) -> None:
    """Replies to a file of prompts: batched, resumable (rerun the same command after an interruption)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from prefkit.batch_generate import PART_SUFFIX, check_files, generate_file
    from prefkit.cli_common import console, setup_logging
    from prefkit.inference import load_for_inference, parse_adapters

    setup_logging()
    if batch_size < 1:
        raise fail("--batch-size must be at least 1")
    progress = Progress(
        TextColumn("generating"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    task = None
    counted = {"tokens": 0}

    def on_start(total: int, done: int) -> None:
        nonlocal task
        if done:
            print(f"resuming: {done} of {total} prompts already done", file=sys.stderr)
        progress.start()
        task = progress.add_task("generate", total=total, completed=done, rate="")

    def on_done(prompts: int, tokens: int) -> None:
        counted["tokens"] += tokens
        elapsed = progress.tasks[0].elapsed or 0
        rate = f"{counted['tokens'] / elapsed:.1f} tok/s" if elapsed > 0 else ""
        progress.update(task, advance=prompts, rate=rate)

    try:
        check_files(input, output, skip_bad=skip_bad, force=force)
        adapters = parse_adapters([str(adapter)]) if adapter else []
        loaded = load_for_inference(
            _candidates(model), adapters, template=template, dtype=dtype, device=device, threads=threads
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
            on_start=on_start,
            on_done=on_done,
        )
    except KeyboardInterrupt:
        progress.stop()
        print(
            f"interrupted; finished replies are kept in {output}{PART_SUFFIX}: run the same command again to "
            "continue",
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
    output: Annotated[Path, typer.Option(help="The folder to write (new or empty; --force replaces it).")],
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
    force: Annotated[bool, typer.Option(help="Replace a non-empty output folder.")] = False,
) -> None:
    """Merge LoRA adapter(s) into the base model and write a plain transformers model folder."""
    from prefkit.cli_common import console, setup_logging
    from prefkit.export import export_model
    from prefkit.inference import parse_adapters

    setup_logging()
    result = export_model(
        _candidates(model),
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


@use_app.command()
@reported
def serve(
    model: Model,
    adapter: Annotated[
        list[str] | None, typer.Option(help="NAME=PATH of a LoRA adapter to serve as model NAME; repeatable.")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free one).")] = 8000,
    api_key: ApiKey = None,
    served_model_name: Annotated[
        str | None, typer.Option(help="The base model's name in the API (default: --model).")
    ] = None,
    max_batch: Annotated[int, typer.Option(help="Sequences decoded together.")] = 8,
    max_queue: Annotated[int, typer.Option(help="Requests waiting for a slot; more get 429.")] = 64,
    max_tokens: Annotated[int, typer.Option(help="Largest max_tokens a request may ask for.")] = 512,
    max_model_len: Annotated[
        int | None, typer.Option(help="Prompt + reply tokens (default: the model's context, at most 4096).")
    ] = None,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body.")] = 1 << 20,
    max_connections: Annotated[int, typer.Option(help="Open connections; beyond, requests get 503.")] = 256,
    body_timeout: Annotated[
        float, typer.Option(help="Seconds a request body may take to arrive (408).")
    ] = 30.0,
    header_timeout: Annotated[
        float, typer.Option(help="Seconds a connection may take to send a request's headers (then closed).")
    ] = 10.0,
    template: Template = None,
    dtype: Dtype = "auto",
    device: Device = "auto",
    threads: Threads = None,
    log_level: LogLevel = "info",
    ui: Annotated[
        bool, typer.Option("--ui", help="Also serve the web page at / (runs and a chat; see docs/ui.md).")
    ] = False,
    runs: Annotated[
        Path | None,
        typer.Option(help="The folder whose prefkit runs the page shows (implies --ui; default: here)."),
    ] = None,
) -> None:
    """An OpenAI-compatible HTTP server for the model and its adapters (/v1/chat/completions, ...)."""
    from prefkit.cli_common import setup_logging
    from prefkit.inference import parse_adapters
    from prefkit.serve import ServeLimits
    from prefkit.serve import serve as run_server

    setup_logging()
    limits = ServeLimits(
        max_batch=max_batch,
        max_queue=max_queue,
        max_tokens=max_tokens,
        max_model_len=max_model_len,
        max_body_bytes=max_body_bytes,
        max_connections=max_connections,
        body_timeout=body_timeout,
        header_timeout=header_timeout,
    )
    limits.check()
    run_server(
        _candidates(model),
        parse_adapters(adapter or []),
        host=host,
        port=port,
        api_key=api_key or os.environ.get("PREFKIT_API_KEY") or None,
        limits=limits,
        served_model_name=served_model_name,
        template=template,
        dtype=dtype,
        device=device,
        threads=threads,
        log_level=log_level,
        ui_runs=runs if runs is not None else (Path(".") if ui else None),
    )


@use_app.command()
@reported
def ui(
    runs: Annotated[
        Path, typer.Option(help="The folder whose prefkit runs (and evaluations) the page shows.")
    ],
    model: Annotated[
        str | None,
        typer.Option(help="Also serve this base model for the page's chat (as prefkit serve --model)."),
    ] = None,
    adapter: Annotated[
        list[str] | None, typer.Option(help="NAME=PATH of a LoRA adapter to chat with; repeatable.")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free one).")] = 8000,
    api_key: ApiKey = None,
    served_model_name: Annotated[
        str | None, typer.Option(help="The base model's name in the chat (default: --model).")
    ] = None,
    template: Template = None,
    dtype: Dtype = "auto",
    device: Device = "auto",
    threads: Threads = None,
    log_level: LogLevel = "info",
) -> None:
    """The web page for a folder of runs: status, live curves, configs, evaluations, overlays; with
    --model, a chat with the model and its adapters (prefkit serve --ui with fewer options)."""
    from prefkit.cli_common import setup_logging
    from prefkit.inference import parse_adapters
    from prefkit.ui import serve_ui

    setup_logging()
    if adapter and model is None:
        raise fail("--adapter needs --model (the base model the adapters were trained on)")
    options = {"served_model_name": served_model_name, "template": template, "dtype": dtype}
    options |= {"device": device, "threads": threads}
    serve_ui(
        runs,
        _candidates(model) if model is not None else None,
        parse_adapters(adapter or []),
        host=host,
        port=port,
        api_key=api_key or os.environ.get("PREFKIT_API_KEY") or None,
        log_level=log_level,
        **(options if model is not None else {}),
    )
