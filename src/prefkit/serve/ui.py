"""`prefkit ui`: serving the web page (:mod:`prefkit.ui`) for a runs directory -- alone (runs only, no model
loaded), or with a model and its adapters (then it is ``prefkit serve --ui``: the page's chat talks to the
same ``/v1`` API)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from prefkit.arena.votes import VOTES_FILE
from prefkit.errors import PrefkitError
from prefkit.serve.arena import Arena, mount_arena
from prefkit.serve.limits import ServeLimits
from prefkit.serve.server import announce_exposure, run_app, serve
from prefkit.ui.routes import mount_ui
from prefkit.ui.runs import RunsDir
from prefkit.web.guard import BrowserGuard, host_allow_list


def runs_app(runs: RunsDir, api_key: str | None, *, allowed: frozenset[str] | None = frozenset()) -> FastAPI:
    """The page and its runs API, with no model behind it (the page's chat says so; its arena shows the
    standings of the votes already cast); the Host must be a loopback name or one of ``allowed`` (None:
    any), as on ``prefkit serve``."""
    app = FastAPI(title="prefkit ui", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BrowserGuard, allowed=allowed)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    mount_ui(app, runs, api_key=api_key, chat=False)
    mount_arena(app, Arena.prepare(runs.root / VOTES_FILE, []), api_key=api_key)
    return app


def serve_ui(
    runs_dir: str | Path,
    model: str | Sequence[str] | None = None,
    adapters: Sequence[Any] = (),
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    allowed_hosts: Sequence[str] = (),
    log_level: str = "info",
    prompts: str | Path | None = None,
    **model_options: Any,
) -> None:
    """Serve the page for ``runs_dir`` until interrupted. With ``model`` (and ``adapters``) this is
    :func:`prefkit.serve.serve` with ``ui_runs``; ``model_options`` go to it (dtype, template, ...).
    ``allowed_hosts``: the host names the server answers to besides loopback ones (see serve)."""
    if model is not None:
        serve(
            model,
            adapters,
            host=host,
            port=port,
            api_key=api_key,
            allowed_hosts=allowed_hosts,
            log_level=log_level,
            ui_runs=runs_dir,
            arena_prompts=prompts,
            **model_options,
        )
        return
    if prompts is not None:
        raise PrefkitError(
            "--prompts is for the arena, which needs models to answer: add --model (and --adapter)"
        )
    allowed = host_allow_list(host, allowed_hosts)
    runs = RunsDir.open(runs_dir)
    announce_exposure(host, api_key, allowed, f"/ui/api reads the runs under {runs.root}")
    app = runs_app(runs, api_key, allowed=allowed)
    run_app(
        app,
        host=host,
        port=port,
        limits=ServeLimits(),
        log_level=log_level,
        command="prefkit ui",
        what="the web page at /",
    )
