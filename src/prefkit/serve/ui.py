"""`prefkit ui`: serving the web page (:mod:`prefkit.ui`) for a runs directory -- alone (runs only, no model
loaded), or with a model and its adapters (then it is ``prefkit serve --ui``: the page's chat talks to the
same ``/v1`` API)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from prefkit.serve.limits import ServeLimits
from prefkit.serve.server import run_app, serve, warn_if_open
from prefkit.ui.routes import mount_ui
from prefkit.ui.runs import RunsDir


def runs_app(runs: RunsDir, api_key: str | None) -> FastAPI:
    """The page and its runs API, with no model behind it (the page's chat says so)."""
    app = FastAPI(title="prefkit ui", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    mount_ui(app, runs, api_key=api_key, chat=False)
    return app


def serve_ui(
    runs_dir: str | Path,
    model: str | Sequence[str] | None = None,
    adapters: Sequence[Any] = (),
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    log_level: str = "info",
    **model_options: Any,
) -> None:
    """Serve the page for ``runs_dir`` until interrupted. With ``model`` (and ``adapters``) this is
    :func:`prefkit.serve.serve` with ``ui_runs``; ``model_options`` go to it (dtype, template, ...)."""
    if model is not None:
        serve(
            model,
            adapters,
            host=host,
            port=port,
            api_key=api_key,
            log_level=log_level,
            ui_runs=runs_dir,
            **model_options,
        )
        return
    warn_if_open(host, api_key)
    app = runs_app(RunsDir.open(runs_dir), api_key)
    run_app(
        app,
        host=host,
        port=port,
        limits=ServeLimits(),
        log_level=log_level,
        command="prefkit ui",
        what="the web page at /",
    )
