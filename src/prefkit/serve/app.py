"""The HTTP API: OpenAI's ``/v1/models``, ``/v1/chat/completions`` and ``/v1/completions`` (plain and
server-sent events), and ``/health``.

The request's ``model`` picks what answers: the base model's served name, or an adapter's name. Every
handler validates first (a 4xx with an OpenAI error body for anything wrong), renders and tokenises
the prompt off the event loop, submits to the scheduler, then relays text as it comes. A client that
disconnects cancels its request: streaming responses notice through Starlette's cancellation,
plain ones through a task watching for ``http.disconnect``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from prefkit.data.examples import Message
from prefkit.engine import BASE_MODEL
from prefkit.engine import Request as GenerationRequest
from prefkit.errors import PrefkitError
from prefkit.generate import StopCondition, default_settings, stop_condition
from prefkit.inference import LoadedModel
from prefkit.serve.auth import check_api_key
from prefkit.serve.errors import APIError, bad_request, error_body
from prefkit.serve.limits import ServeLimits, read_json
from prefkit.serve.scheduler import Event, QueueFull, Scheduler, Ticket
from prefkit.serve.schemas import ChatCompletionRequest, CompletionRequest

logger = logging.getLogger(__name__)


@dataclass
class ServedModel:
    name: str
    adapter: str | None  # the engine's adapter name (BASE_MODEL for the base of a PeftModel)
    root: str  # the folder or hub id it was loaded from
    parent: str | None  # the base's name, for adapters (as vLLM lists LoRA modules)


@dataclass
class ServerState:
    loaded: LoadedModel
    scheduler: Scheduler
    limits: ServeLimits
    models: dict[str, ServedModel]
    max_model_len: int
    api_key: str | None = None
    created: int = field(default_factory=lambda: int(time.time()))


# pydantic names the member of a union it tried ("str", "list[TextPart]") inside an error's location.
_UNION_TAG = re.compile(
    r"^(str|int|float|bool|none|list\[.*\]|dict\[.*\]|literal\[.*\]|function-.*|[A-Z]\w*)$"
)


def _validation_message(err: ValidationError) -> tuple[str, str]:
    first = err.errors()[0]
    param = ".".join(str(part) for part in first["loc"] if not _UNION_TAG.match(str(part)))
    if first["type"] == "missing":
        return f"Missing required parameter: '{param}'.", param
    return f"Invalid value for '{param}': {first['msg']}.", param


def _parse(model: type[ChatCompletionRequest] | type[CompletionRequest], data: dict[str, Any]) -> Any:
    try:
        parsed = model.model_validate(data)
    except ValidationError as err:
        message, param = _validation_message(err)
        raise bad_request(message, param) from None
    unsupported = parsed.unsupported()
    if unsupported is not None:
        raise bad_request(unsupported[1], unsupported[0])
    return parsed


def _sse(data: Any) -> bytes:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


class _Job:
    """One HTTP request's generation: its prompts, tickets and the text gathered so far."""

    def __init__(self, state: ServerState, served: ServedModel, prompts: list[list[int]], body: Any) -> None:
        self.state = state
        self.served = served
        self.prompts = prompts
        self.body = body
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.tickets: list[Ticket] = []
        self.texts = [""] * len(prompts)
        self.finish = [None] * len(prompts)

    def requests(self, stop: StopCondition) -> list[GenerationRequest]:
        body, limits = self.body, self.state.limits
        out = []
        for ids in self.prompts:
            room = self.state.max_model_len - len(ids)
            asked = body.requested_max_tokens()
            if asked is not None and len(ids) + asked > self.state.max_model_len:
                raise bad_request(
                    f"This model's maximum context length is {self.state.max_model_len} tokens. However, you "
                    f"requested {len(ids) + asked} tokens ({len(ids)} in the prompt, {asked} in the "
                    "completion). Please reduce the prompt or max_tokens.",
                    "max_tokens",
                    "context_length_exceeded",
                )
            max_new = asked if asked is not None else min(limits.max_tokens, room, self._default_max())
            settings = default_settings(
                self.state.loaded.model,
                max_new_tokens=max_new,
                temperature=body.temperature,
                top_p=body.top_p,
                top_k=max(body.top_k, 0) if body.top_k is not None else None,
                repetition_penalty=body.repetition_penalty,
                seed=body.seed,
            )
            out.append(
                GenerationRequest(
                    ids, settings, stop, self.served.adapter, self.state.max_model_len, body.ignore_eos
                )
            )
        return out

    def _default_max(self) -> int:
        # OpenAI's completions endpoint defaults to 16 tokens; chat runs to the end of the reply.
        return 16 if isinstance(self.body, CompletionRequest) else self.state.limits.max_tokens

    def submit(self, stop: StopCondition) -> None:
        try:
            self.tickets = self.state.scheduler.submit(self.requests(stop), self.queue)
        except QueueFull:
            raise APIError(
                429,
                f"The server is busy: {self.state.scheduler.waiting} requests are waiting (the limit is "
                f"{self.state.limits.max_queue}). Please retry shortly.",
                code="queue_full",
            ) from None

    def cancel(self) -> None:
        self.state.scheduler.cancel(self.tickets)

    async def events(self) -> AsyncIterator[Event]:
        """Every event until all prompts have finished; an APIError(500) if generation failed."""
        remaining = len(self.prompts)
        while remaining:
            event = await self.queue.get()
            if event.error is not None:
                raise APIError(500, event.error, code="generation_failed")
            self.texts[event.index] += event.text
            if event.finished:
                remaining -= 1
                self.finish[event.index] = self.tickets[event.index].seq.finish_reason
            yield event

    def usage(self) -> dict[str, int]:
        prompt = sum(len(p) for p in self.prompts)
        completion = sum(t.seq.completion_tokens for t in self.tickets)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def create_app(state: ServerState) -> FastAPI:
    app = FastAPI(title="prefkit", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.prefkit = state

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

    @app.middleware("http")
    async def _auth(request: Request, call_next: Any) -> Any:
        if request.url.path.startswith("/v1") and state.api_key is not None:
            try:
                check_api_key(request.headers.get("authorization"), state.api_key)
            except APIError as err:
                return err.response()
        return await call_next(request)

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

    def served(name: str) -> ServedModel:
        if name not in state.models:
            known = ", ".join(state.models)
            raise APIError(
                404,
                f"The model '{name}' does not exist. This server has: {known}.",
                param="model",
                code="model_not_found",
            )
        return state.models[name]

    def check_max_tokens(asked: int | None) -> None:
        if asked is None:
            return
        if asked < 1:
            raise bad_request(f"max_tokens must be at least 1, got {asked}.", "max_tokens")
        if asked > state.limits.max_tokens:
            raise bad_request(
                f"max_tokens is {asked}; this server allows at most {state.limits.max_tokens} "
                "(prefkit serve --max-tokens).",
                "max_tokens",
            )

    def check_prompt_length(ids: list[int], param: str) -> None:
        if len(ids) >= state.max_model_len:
            raise bad_request(
                f"This model's maximum context length is {state.max_model_len} tokens. However, your "
                f"{'messages' if param == 'messages' else 'prompt'} resulted in {len(ids)} tokens, which "
                "leaves no room for a reply. Please shorten it.",
                param,
                "context_length_exceeded",
            )

    def chat_prompt(body: ChatCompletionRequest, model: ServedModel) -> list[int]:
        messages = []
        for i, m in enumerate(body.messages):
            role = "system" if m.role == "developer" else m.role
            if role == "system" and i > 0:
                raise bad_request("A system message may only come first.", f"messages.{i}.role")
            messages.append(Message(role, m.text()))
        if messages[-1].role != "user":
            raise bad_request("The last message must be from the user.", "messages")
        try:
            return state.loaded.encoder(model.adapter).prompt_ids(messages)
        except (jinja2.TemplateError, PrefkitError, ValueError) as err:
            raise bad_request(
                f"The model's chat template cannot render these messages: {err}", "messages"
            ) from None

    async def respond(request: Request, job: _Job, stream: bool, chunk: Any, final: Any) -> Any:
        if stream:
            return StreamingResponse(
                _stream(job, chunk, job.body.stream_options),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        watcher = asyncio.create_task(_until_disconnected(request))
        try:
            gather = asyncio.create_task(_drain(job))
            done, _ = await asyncio.wait({gather, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if gather not in done:  # the client went away
                gather.cancel()
                job.cancel()
                return JSONResponse(error_body(499, "client disconnected"), status_code=499)
            gather.result()
            return final()
        finally:
            watcher.cancel()
            if any(f is None for f in job.finish):
                job.cancel()

    async def _drain(job: _Job) -> None:
        async for _ in job.events():
            pass

    async def _stream(job: _Job, chunk: Any, options: Any) -> AsyncIterator[bytes]:
        include_usage = bool(options and options.include_usage)
        try:
            for first in chunk.first():
                yield _sse(first)
            async for event in job.events():
                if event.text or event.finished:
                    yield _sse(chunk.piece(event, job.finish[event.index] if event.finished else None))
            if include_usage:
                yield _sse(chunk.usage(job.usage()))
            yield b"data: [DONE]\n\n"
        except APIError as err:
            yield _sse(err.body())
        finally:
            if any(f is None for f in job.finish):
                job.cancel()  # the client disconnected (Starlette cancelled this generator) or it failed

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        body = _parse(ChatCompletionRequest, await read_json(request, state.limits))
        model = served(body.model)
        check_max_tokens(body.requested_max_tokens())
        ids = await run_in_threadpool(chat_prompt, body, model)
        check_prompt_length(ids, "messages")
        encoder = state.loaded.encoder(model.adapter)
        base_stop = stop_condition(state.loaded.model, encoder)
        job = _Job(state, model, [ids], body)
        job.submit(StopCondition(base_stop.ids, base_stop.strings + tuple(body.stop_strings())))
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        chunk = _ChatChunks(
            ident, created, model.name, bool(body.stream_options and body.stream_options.include_usage)
        )

        def final() -> dict[str, Any]:
            return {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": model.name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": job.texts[0]},
                        "finish_reason": job.finish[0],
                        "logprobs": None,
                    }
                ],
                "usage": job.usage(),
            }

        return await respond(request, job, body.stream, chunk, final)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        body = _parse(CompletionRequest, await read_json(request, state.limits))
        model = served(body.model)
        check_max_tokens(body.requested_max_tokens())
        prompts = body.prompts()
        if not prompts or len(prompts) > state.limits.max_batch:
            raise bad_request(
                f"prompt must be a string or a list of 1 to {state.limits.max_batch} strings.", "prompt"
            )
        if any(not p for p in prompts):
            raise bad_request("prompt must not be empty.", "prompt")
        tokenizer = state.loaded.tokenizer
        ids = await run_in_threadpool(lambda: [tokenizer(p)["input_ids"] for p in prompts])
        for one in ids:
            check_prompt_length(one, "prompt")
        base_stop = stop_condition(state.loaded.model, state.loaded.encoder(model.adapter))
        job = _Job(state, model, ids, body)
        job.submit(StopCondition(base_stop.ids, tuple(body.stop_strings())))
        ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        chunk = _CompletionChunks(
            ident, created, model.name, bool(body.stream_options and body.stream_options.include_usage)
        )

        def final() -> dict[str, Any]:
            choices = [
                {"index": i, "text": job.texts[i], "finish_reason": job.finish[i], "logprobs": None}
                for i in range(len(prompts))
            ]
            return {
                "id": ident,
                "object": "text_completion",
                "created": created,
                "model": model.name,
                "choices": choices,
                "usage": job.usage(),
            }

        return await respond(request, job, body.stream, chunk, final)

    return app


@dataclass
class _ChatChunks:
    ident: str
    created: int
    model: str
    include_usage: bool

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        chunk = {
            "id": self.ident,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def first(self) -> list[dict[str, Any]]:
        return [
            self._chunk(
                [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "finish_reason": None,
                        "logprobs": None,
                    }
                ]
            )
        ]

    def piece(self, event: Event, finish: str | None) -> dict[str, Any]:
        delta = {"content": event.text} if event.text else {}
        return self._chunk(
            [{"index": event.index, "delta": delta, "finish_reason": finish, "logprobs": None}]
        )

    def usage(self, usage: dict[str, int]) -> dict[str, Any]:
        chunk = self._chunk([])
        chunk["usage"] = usage
        return chunk


@dataclass
class _CompletionChunks:
    ident: str
    created: int
    model: str
    include_usage: bool

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        chunk = {
            "id": self.ident,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def first(self) -> list[dict[str, Any]]:
        return []

    def piece(self, event: Event, finish: str | None) -> dict[str, Any]:
        return self._chunk(
            [{"index": event.index, "text": event.text, "finish_reason": finish, "logprobs": None}]
        )

    def usage(self, usage: dict[str, int]) -> dict[str, Any]:
        chunk = self._chunk([])
        chunk["usage"] = usage
        return chunk


def served_models(loaded: LoadedModel, base_name: str) -> dict[str, ServedModel]:
    """The base under ``base_name`` and each adapter under its own name (names must not collide)."""
    base_adapter = BASE_MODEL if loaded.adapters else None
    models = {base_name: ServedModel(base_name, base_adapter, loaded.model_path, None)}
    for name, path in loaded.adapters.items():
        if name in models:
            raise PrefkitError(
                f"--adapter {name}: the name is also the base model's served name; choose another"
            )
        models[name] = ServedModel(name, name, str(path), base_name)
    return models
