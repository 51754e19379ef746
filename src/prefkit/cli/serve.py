"""The servers: `prefkit serve` (the OpenAI-compatible API, optionally with the web page) and `prefkit ui`
(the web page for a folder of runs) -- a thin skin over prefkit.serve and prefkit.ui."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prefkit.cli.common import fail, reported
from prefkit.cli.options import (
    ApiKey,
    Device,
    Dtype,
    Host,
    LogLevel,
    Model,
    Port,
    Template,
    Threads,
    candidates,
)

serve_app = typer.Typer()

Prompts = Annotated[
    Path | None,
    typer.Option(
        help='Prompts the page\'s blind arena draws from (JSONL of {"prompt": ...}, or a preference/SFT '
        "data file: its prompts); votes go to RUNS/arena/votes.jsonl. See docs/human-eval.md.",
    ),
]
AllowedHost = Annotated[
    list[str] | None,
    typer.Option(
        help="A host name (or address) clients use in URLs to reach this server; repeatable. Requests "
        "naming any other host get 421, which keeps DNS-rebinding web pages out (localhost and loopback "
        "addresses are always answered). Bound to a non-loopback --host with none given, any host is.",
    ),
]


@serve_app.command()
@reported
def serve(
    model: Model,
    adapter: Annotated[
        list[str] | None, typer.Option(help="NAME=PATH of a LoRA adapter to serve as model NAME; repeatable.")
    ] = None,
    host: Host = "127.0.0.1",
    port: Port = 8000,
    api_key: ApiKey = None,
    allowed_host: AllowedHost = None,
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
    prompts: Prompts = None,
) -> None:
    """An OpenAI-compatible HTTP server for the model and its adapters (/v1/chat/completions, ...)."""
    from prefkit.cli.common import setup_logging
    from prefkit.model.adapters import parse_adapters
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
        candidates(model),
        parse_adapters(adapter or []),
        host=host,
        port=port,
        api_key=api_key or None,  # --api-key reads $PREFKIT_API_KEY itself
        limits=limits,
        served_model_name=served_model_name,
        template=template,
        dtype=dtype,
        device=device,
        threads=threads,
        log_level=log_level,
        ui_runs=runs if runs is not None else (Path(".") if ui else None),
        arena_prompts=prompts,
        allowed_hosts=allowed_host or (),
    )


@serve_app.command()
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
    host: Host = "127.0.0.1",
    port: Port = 8000,
    api_key: ApiKey = None,
    allowed_host: AllowedHost = None,
    served_model_name: Annotated[
        str | None, typer.Option(help="The base model's name in the chat (default: --model).")
    ] = None,
    template: Template = None,
    dtype: Dtype = "auto",
    device: Device = "auto",
    threads: Threads = None,
    log_level: LogLevel = "info",
    prompts: Prompts = None,
) -> None:
    """The web page for a folder of runs: status, live curves, configs, evaluations, overlays; with
    --model, a chat with the model and its adapters (prefkit serve --ui with fewer options)."""
    from prefkit.cli.common import setup_logging
    from prefkit.model.adapters import parse_adapters
    from prefkit.serve.ui import serve_ui

    setup_logging()
    if adapter and model is None:
        raise fail("--adapter needs --model (the base model the adapters were trained on)")
    options = {"served_model_name": served_model_name, "template": template, "dtype": dtype}
    options |= {"device": device, "threads": threads}
    serve_ui(
        runs,
        candidates(model) if model is not None else None,
        parse_adapters(adapter or []),
        host=host,
        port=port,
        api_key=api_key or None,  # --api-key reads $PREFKIT_API_KEY itself
        allowed_hosts=allowed_host or (),
        log_level=log_level,
        prompts=prompts,
        **(options if model is not None else {}),
    )
