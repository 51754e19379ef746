"""`prefkit serve`: load the model and adapters, start the decode thread, run uvicorn."""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefkit.arena.prompts import load_prompts
from prefkit.arena.votes import VOTES_FILE
from prefkit.errors import PrefkitError
from prefkit.infer.decode import Decoder
from prefkit.model.adapters import AdapterSpec
from prefkit.model.inference import load_for_inference
from prefkit.serve.app import create_app
from prefkit.serve.arena import Arena, mount_arena
from prefkit.serve.limits import GuardedH11Protocol, ServeLimits, model_len
from prefkit.serve.scheduler import Scheduler
from prefkit.serve.state import ServerState, served_models
from prefkit.web.guard import host_allow_list, is_loopback_name

logger = logging.getLogger(__name__)


def build_state(
    model: str | Sequence[str],
    adapters: Sequence[AdapterSpec] = (),
    *,
    limits: ServeLimits | None = None,
    api_key: str | None = None,
    served_model_name: str | None = None,
    template: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
    threads: int | None = None,
) -> ServerState:
    """Everything the app serves from, with the decode thread started."""
    limits = limits or ServeLimits()
    limits.check()
    loaded = load_for_inference(
        model, adapters, template=template, dtype=dtype, device=device, threads=threads
    )
    max_len = model_len(limits, loaded.context_length)
    name = served_model_name or (model if isinstance(model, str) else model[0])
    models = served_models(loaded, name)

    def make_decoder() -> Decoder:
        return Decoder(
            loaded.model, loaded.tokenizer, max_batch=limits.max_batch, prefill_tokens=max(max_len, 4096)
        )

    scheduler = Scheduler(make_decoder, limits.max_queue)
    scheduler.start()
    return ServerState(loaded, scheduler, limits, models, max_len, api_key)


def announce_exposure(host: str, api_key: str | None, allowed: frozenset[str] | None, exposed: str) -> None:
    """Say at start-up who can use the server and what that gives them (``exposed``: what the routes
    do), and which browser-side protection is off."""
    if api_key is None:
        who = "any program on this machine" if is_loopback_name(host) else "anyone who can reach this port"
        log = logger.info if is_loopback_name(host) else logger.warning
        log(
            "no API key: %s can use this server (%s); set --api-key or $PREFKIT_API_KEY to require one",
            who,
            exposed,
        )
    if allowed is None:
        logger.warning(
            "bound to %s with no --allowed-host: requests naming any host are answered, so a web page "
            "that points its own name at this address (DNS rebinding) can use the server from a visitor's "
            "browser; list the names clients use with --allowed-host NAME",
            host,
        )


def run_app(
    app: Any,
    *,
    host: str,
    port: int,
    limits: ServeLimits,
    log_level: str,
    command: str = "prefkit serve",
    what: str = "OpenAI API under /v1",
) -> None:
    """Bind ``host:port``, print the address, and run ``app`` under uvicorn with the connection limits
    until interrupted (Ctrl-C or SIGTERM stop it cleanly)."""
    import uvicorn

    protocol = type("GuardedH11", (GuardedH11Protocol,), {"header_timeout": limits.header_timeout})
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol,
        limit_concurrency=limits.max_connections,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=5,
        log_level=log_level,
    )
    # Bind here rather than in uvicorn: port 0 becomes a real port we can print whatever the log level.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        raise PrefkitError(f"cannot listen on {host}:{port}: {err.strerror or err}") from err
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    print(f"{command}: listening on http://{shown}:{bound} ({what})", file=sys.stderr, flush=True)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


def serve(
    model: str | Sequence[str],
    adapters: Sequence[AdapterSpec] = (),
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    limits: ServeLimits | None = None,
    served_model_name: str | None = None,
    template: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
    threads: int | None = None,
    log_level: str = "info",
    ui_runs: str | Path | None = None,
    arena_prompts: str | Path | None = None,
    allowed_hosts: Sequence[str] = (),
) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM stop it cleanly). ``ui_runs``: also serve the web page
    at ``/`` (runs under that folder, and a chat with the served models; see prefkit.ui).
    ``allowed_hosts``: the host names (as in clients' URLs) the server answers to besides ``localhost``
    and loopback addresses; any other ``Host`` gets 421 (see :mod:`prefkit.web.guard`). Bound to a
    non-loopback address with none listed, any host is answered (and the start-up log says so).
    ``arena_prompts``: a file the page's blind arena draws prompts from (see prefkit.serve.arena); the
    arena's votes go to ``ui_runs``/arena/votes.jsonl."""
    allowed = host_allow_list(host, allowed_hosts)  # checked before the model loads, which takes minutes
    runs = None
    if arena_prompts is not None and ui_runs is None:
        raise PrefkitError("--prompts is for the page's arena: add --ui (and --runs DIR, where votes go)")
    if ui_runs is not None:
        from prefkit.ui import RunsDir

        runs = RunsDir.open(ui_runs)
    prompts = load_prompts(arena_prompts) if arena_prompts is not None else []
    arena = Arena.prepare(runs.root / VOTES_FILE, prompts) if runs is not None else None
    exposed = "/v1 generates with the model" + (
        f", /ui/api reads the runs under {runs.root} and the arena adds votes to {runs.root / VOTES_FILE}"
        if runs is not None
        else ""
    )
    announce_exposure(host, api_key, allowed, exposed)
    state = build_state(
        model,
        adapters,
        limits=limits,
        api_key=api_key,
        served_model_name=served_model_name,
        template=template,
        dtype=dtype,
        device=device,
        threads=threads,
    )
    try:
        app = create_app(state, allowed_hosts=allowed)
        if runs is not None and arena is not None:
            from prefkit.ui import mount_ui

            mount_ui(app, runs, api_key=api_key, chat=True)
            mount_arena(app, arena.attach(state), api_key=api_key)
        names = ", ".join(f"'{m}'" for m in state.models)
        logger.info(
            "serving %s (max_model_len %d, max_batch %d, max_queue %d, max_tokens %d)%s",
            names,
            state.max_model_len,
            state.limits.max_batch,
            state.limits.max_queue,
            state.limits.max_tokens,
            "; API key required" if api_key else "",
        )
        what = "OpenAI API under /v1" + (", the web page at /" if runs is not None else "")
        run_app(app, host=host, port=port, limits=state.limits, log_level=log_level, what=what)
    finally:
        state.scheduler.stop()
