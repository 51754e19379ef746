"""The HTTP API: OpenAI's ``/v1/models``, ``/v1/chat/completions`` and ``/v1/completions`` (plain and
server-sent events), and ``/health``.

The request's ``model`` picks what answers: the base model's served name, or an adapter's name. Every
handler validates first -- a 4xx with an OpenAI error body for anything wrong, never a 500 -- renders
and tokenises the prompt off the event loop, then hands a :class:`~prefkit.serve.jobs.Job` to the
decode thread.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from prefkit.data.examples import Message
from prefkit.errors import PrefkitError
from prefkit.infer.stop import StopCondition, stop_condition
from prefkit.serve.jobs import Job
from prefkit.serve.limits import read_json
from prefkit.serve.schemas import ChatCompletionRequest, CompletionRequest, Strict
from prefkit.serve.state import ServedModel, ServerState
from prefkit.web.auth import check_api_key
from prefkit.web.errors import APIError, bad_request, error_body
from prefkit.web.guard import BrowserGuard

logger = logging.getLogger(__name__)

COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions; chat runs to the cap

# pydantic names the member of a union it tried ("str", "list[TextPart]") inside an error's location.
_UNION_TAG = re.compile(
    r"^(str|int|float|bool|none|list\[.*\]|dict\[.*\]|literal\[.*\]|function-.*|[A-Z]\w*)$"
)


def parse_body(model: type[Strict], data: dict[str, Any]) -> Any:
    """``data`` as ``model``, or a 400 naming the first parameter that is wrong or missing."""
    try:
        parsed = model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        param = ".".join(str(part) for part in first["loc"] if not _UNION_TAG.match(str(part)))
        if first["type"] == "missing":
            raise bad_request(f"Missing required parameter: '{param}'.", param) from None
        raise bad_request(f"Invalid value for '{param}': {first['msg']}.", param) from None
    unsupported = parsed.unsupported()
    if unsupported is not None:
        raise bad_request(unsupported[1], unsupported[0])
    return parsed


class Checks:
    """The request checks that need the server's state."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    def model(self, name: str) -> ServedModel:
        if name not in self.state.models:
            raise APIError(
                404,
                f"The model '{name}' does not exist. This server has: {', '.join(self.state.models)}.",
                param="model",
                code="model_not_found",
            )
        return self.state.models[name]

    def max_tokens(self, asked: int | None) -> None:
        cap = self.state.limits.max_tokens
        if asked is not None and asked < 1:
            raise bad_request(f"max_tokens must be at least 1, got {asked}.", "max_tokens")
        if asked is not None and asked > cap:
            raise bad_request(
                f"max_tokens is {asked}; this server allows at most {cap} (prefkit serve --max-tokens).",
                "max_tokens",
            )

    def prompt_length(self, ids: list[int], param: str) -> None:
        limit = self.state.max_model_len
        if len(ids) >= limit:
            raise bad_request(
                f"This model's maximum context length is {limit} tokens. However, your {param} resulted in "
                f"{len(ids)} tokens, which leaves no room for a reply. Please shorten it.",
                param,
                "context_length_exceeded",
            )

    def chat_prompt(self, body: ChatCompletionRequest, served: ServedModel) -> list[int]:
        messages = []
        for i, m in enumerate(body.messages):
            role = "system" if m.role == "developer" else m.role
            if role == "system" and i > 0:
                raise bad_request("A system message may only come first.", f"messages.{i}.role")
            messages.append(Message(role, m.text()))
        if messages[-1].role != "user":
            raise bad_request("The last message must be from the user.", "messages")
        try:
            return self.state.loaded.encoder(served.adapter).prompt_ids(messages)
        except (jinja2.TemplateError, PrefkitError, ValueError) as err:
            raise bad_request(
                f"The model's chat template cannot render these messages: {err}", "messages"
            ) from None


def create_app(state: ServerState, *, allowed_hosts: frozenset[str] | None = frozenset()) -> FastAPI:
    """The API: errors in OpenAI's shape, the API key checked on ``/v1``, ``/health``, ``/v1/models``,
    ``/v1/chat/completions`` and ``/v1/completions``; requests from browsers' pages kept out (the Host
    must be a loopback name or one of ``allowed_hosts``, None: any; bodies must be JSON --
    :mod:`prefkit.web.guard`)."""
    app = FastAPI(title="prefkit", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.prefkit = state
    _add_error_handlers(app)
    _add_api_key_check(app, state)
    app.add_middleware(BrowserGuard, allowed=allowed_hosts)  # outermost: before the key, on every route
    _add_status_routes(app, state)
    _add_completion_routes(app, state)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, err: APIError) -> JSONResponse:
        return err.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(err.status_code, str(err.detail)), status_code=err.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s", request.url.path)
        return JSONResponse(error_body(500, "internal server error"), status_code=500)


def _add_api_key_check(app: FastAPI, state: ServerState) -> None:
    @app.middleware("http")
    async def _auth(request: Request, call_next: Any) -> Any:
        if request.url.path.startswith("/v1") and state.api_key is not None:
            try:
                check_api_key(request.headers.get("authorization"), state.api_key)
            except APIError as err:
                return err.response()
        return await call_next(request)


def _add_status_routes(app: FastAPI, state: ServerState) -> None:
    @app.get("/health")
    async def health() -> JSONResponse:
        scheduler = state.scheduler
        body = {
            "status": "ok" if scheduler.alive else "stopped",
            "running": scheduler.running,
            "waiting": scheduler.waiting,
            "max_batch": state.limits.max_batch,
            "max_queue": state.limits.max_queue,
            **scheduler.stats,
        }
        return JSONResponse(body, status_code=200 if scheduler.alive else 503)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        data = [
            {
                "id": m.name,
                "object": "model",
                "created": state.created,
                "owned_by": "prefkit",
                "root": m.root,
                "parent": m.parent,
                "max_model_len": state.max_model_len,
            }
            for m in state.models.values()
        ]
        return {"object": "list", "data": data}


def _add_completion_routes(app: FastAPI, state: ServerState) -> None:
    check = Checks(state)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        body = parse_body(ChatCompletionRequest, await read_json(request, state.limits))
        served = check.model(body.model)
        check.max_tokens(body.requested_max_tokens())
        ids = await run_in_threadpool(check.chat_prompt, body, served)
        check.prompt_length(ids, "messages")
        model_stop = stop_condition(state.loaded.model, state.loaded.encoder(served.adapter))
        job = Job(state, served, [ids], body, default_max_tokens=state.limits.max_tokens)
        job.submit(StopCondition(model_stop.ids, model_stop.strings + tuple(body.stop_strings())))
        return await job.respond(request)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        body = parse_body(CompletionRequest, await read_json(request, state.limits))
        served = check.model(body.model)
        check.max_tokens(body.requested_max_tokens())
        prompts = body.prompts()
        if not prompts or len(prompts) > state.limits.max_batch or not all(prompts):
            raise bad_request(
                f"prompt must be a non-empty string or a list of 1 to {state.limits.max_batch} of them.",
                "prompt",
            )
        tokenizer = state.loaded.tokenizer
        ids = await run_in_threadpool(lambda: [tokenizer(p)["input_ids"] for p in prompts])
        for one in ids:
            check.prompt_length(one, "prompt")
        # Plain text completion: the model's end-of-sequence ids stop it, not the chat template's strings.
        model_stop = stop_condition(state.loaded.model, state.loaded.encoder(served.adapter))
        default = min(COMPLETIONS_DEFAULT_MAX_TOKENS, state.limits.max_tokens)
        job = Job(state, served, ids, body, default_max_tokens=default)
        job.submit(StopCondition(model_stop.ids, tuple(body.stop_strings())))
        return await job.respond(request)
