"""Command-line options shared by several commands (those that load a model: `prefkit chat`,
`generate`, `export`, `serve`, `ui`; those that evaluate: `eval`, `sweep`), each spelt and explained
once."""

from __future__ import annotations

from typing import Annotated

import typer

Model = Annotated[
    str,
    typer.Option(
        "--model",
        help="Base model: a builtin alias (smollm2-135m-instruct, gemma3-270m), a folder, a .gguf file or "
        "a hub id; comma-separated candidates are tried in order.",
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
ApiKey = Annotated[
    str | None,
    typer.Option(
        envvar="PREFKIT_API_KEY",
        help="Require 'Authorization: Bearer KEY' on /v1 and /ui/api (or $PREFKIT_API_KEY).",
    ),
]
GuardLimits = Annotated[
    list[str] | None,
    typer.Option(
        "--guard-limit",
        help="FLAG=SHARE: the largest share of a language's replies that may carry a flag (repeat).",
    ),
]
LogLevel = Annotated[str, typer.Option(help="uvicorn log level: debug, info, warning, error.")]


Host = Annotated[str, typer.Option(help="Address to bind (loopback by default).")]
Port = Annotated[int, typer.Option(help="Port (0: any free one).")]


def candidates(model: str) -> str | list[str]:
    """--model as prefkit.model.sources.resolve_first takes it: one name, or comma-separated candidates."""
    names = [m.strip() for m in model.split(",") if m.strip()]
    return names[0] if len(names) == 1 else names
