"""The page's HTTP side: ``/`` (the page), ``/ui/static/NAME`` (its script and style) and the JSON API
under ``/ui/api`` that reads the runs directory. Mounted on ``prefkit serve``'s app (``--ui``), where the
page's chat uses the same ``/v1`` API any OpenAI client does, or on a bare app (``prefkit ui`` without a
model).

With an API key, every ``/ui/api`` request needs ``Authorization: Bearer KEY``, as ``/v1`` does; the page
and its static files are open (they hold no data) and the page asks for the key. Every answer carries a
Content-Security-Policy that allows scripts and styles from this server only (no inline script, no
``eval``, no other origin), as a second line of defence behind the page's own escaping.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from prefkit.evaluate.compare import Run, differing_settings
from prefkit.ui.metrics import BadCursor, read_since
from prefkit.ui.runs import METRICS, RunsDir
from prefkit.web.auth import require_api_key
from prefkit.web.errors import APIError

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
API_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css"}
MAX_COMPARED = 8


def _static_files() -> dict[str, tuple[bytes, str]]:
    """The page's files, read once from the package: a request can only name one of these."""
    folder = resources.files("prefkit.ui") / "static"
    return {
        f.name: (f.read_bytes(), MEDIA_TYPES[Path(f.name).suffix])
        for f in folder.iterdir()
        if Path(f.name).suffix in MEDIA_TYPES
    }


def _not_found(what: str) -> APIError:
    return APIError(404, f"no {what} with this id in the runs directory", code="not_found")


def _json(body: Any) -> JSONResponse:
    return JSONResponse(body, headers=API_HEADERS)


def ui_router(runs: RunsDir, *, api_key: str | None, chat: bool) -> APIRouter:
    """The page and its static files, and its API under ``/ui/api`` (behind the API key where one is
    set): the runs, their metrics, configs and evaluations, and the comparison of runs."""

    router = _page_router(_static_files())
    api = APIRouter(prefix="/ui/api", dependencies=[Depends(require_api_key(api_key))])
    _add_run_routes(api, runs, chat)
    _add_eval_routes(api, runs)
    router.include_router(api)
    return router


def _page_router(files: dict[str, tuple[bytes, str]]) -> APIRouter:
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    def page() -> Response:
        body, media_type = files["index.html"]
        return Response(body, media_type=media_type, headers=PAGE_HEADERS)

    @router.get("/ui/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in files:
            raise APIError(404, "no such file", code="not_found")
        body, media_type = files[name]
        return Response(body, media_type=media_type, headers=PAGE_HEADERS)

    return router


def _find(runs: RunsDir, run_id: str) -> Any:
    run = runs.run(run_id)
    if run is None:
        raise _not_found("run")
    return run


def _add_run_routes(api: APIRouter, runs: RunsDir, chat: bool) -> None:
    @api.get("/info")
    def info() -> JSONResponse:
        return _json({"chat": chat, "runs_dir": runs.root.name or str(runs.root)})

    @api.get("/runs")
    def list_runs() -> JSONResponse:
        found = runs.scan()
        attached, loose = runs.evals_by_run()
        now = time.time()
        summaries = []
        for run in found.runs.values():
            summary = runs.summary(run, now)
            summary["evals"] = [{"id": e.id, "name": e.name} for e in attached.get(run.id, [])]
            summaries.append(summary)
        summaries.sort(key=lambda s: (-(s["updated"] or 0), s["name"]))
        return _json(
            {
                "runs": summaries,
                "evals": [{"id": e.id, "name": e.name} for e in loose],
                "truncated": found.truncated,
            }
        )

    @api.get("/runs/{run_id}")
    def run_detail(run_id: str) -> JSONResponse:
        run = _find(runs, run_id)
        summary = runs.summary(run)
        attached, _ = runs.evals_by_run()
        summary["evals"] = [{"id": e.id, "name": e.name} for e in attached.get(run.id, [])]
        return _json(summary)

    @api.get("/runs/{run_id}/metrics")
    def run_metrics(run_id: str, since: Annotated[str | None, Query(max_length=100)] = None) -> JSONResponse:
        run = _find(runs, run_id)
        try:
            return _json(read_since(runs.root, run.path / METRICS, since).to_json())
        except BadCursor as err:
            raise APIError(400, str(err), param="since", code="invalid_cursor") from None

    @api.get("/runs/{run_id}/config")
    def run_config(run_id: str) -> JSONResponse:
        return _json(runs.config(_find(runs, run_id)))


def _add_eval_routes(api: APIRouter, runs: RunsDir) -> None:
    @api.get("/runs/{run_id}/evals")
    def run_evals(run_id: str) -> JSONResponse:
        run = _find(runs, run_id)
        attached, _ = runs.evals_by_run()
        return _json({"evals": [runs.evaluation(e) for e in attached.get(run.id, [])]})

    @api.get("/evals/{eval_id}")
    def evaluation(eval_id: str) -> JSONResponse:
        ev = runs.eval(eval_id)
        if ev is None:
            raise _not_found("evaluation")
        return _json(runs.evaluation(ev))

    @api.get("/compare")
    def compare(run_id: Annotated[list[str] | None, Query(alias="id")] = None) -> JSONResponse:
        run_id = run_id or []
        if not 1 <= len(run_id) <= MAX_COMPARED:
            raise APIError(400, f"name 1 to {MAX_COMPARED} runs: ?id=A&id=B", param="id")
        chosen = [_find(runs, i) for i in run_id]
        records = [runs.config(run)["record"] or {} for run in chosen]
        resolved = [r.get("config") if isinstance(r.get("config"), dict) else {} for r in records]
        # prefkit compare's own rule for which settings differ (output_dir and the like left out)
        differing = differing_settings(
            [Run(r.name, r.path, c, [], {}) for r, c in zip(chosen, resolved, strict=True)]
        )
        return _json({"runs": [runs.summary(run) for run in chosen], "differing": differing})


def mount_ui(app: FastAPI, runs: RunsDir, *, api_key: str | None, chat: bool) -> None:
    """Serve the page at ``/`` and its API under ``/ui/api`` on ``app``, reading ``runs`` only."""
    if APIError not in app.exception_handlers:

        async def _api_error(request: Request, err: APIError) -> JSONResponse:
            return err.response()

        app.add_exception_handler(APIError, _api_error)  # type: ignore[arg-type]
    app.include_router(ui_router(runs, api_key=api_key, chat=chat))
