"""One HTTP request's generation: its prompts become decoder requests (limits checked), go to the
scheduler, and come back as text -- whole, or streamed as server-sent events.

A client that goes away cancels its generation: a streamed response is cancelled by Starlette when the
client disconnects (the generator's ``finally`` cancels the job); a plain one races the generation
against a task that waits for ``http.disconnect``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from prefkit.infer.decode import Request as GenerationRequest
from prefkit.infer.sampling import default_settings
from prefkit.infer.stop import StopCondition
from prefkit.serve.responses import SSE_DONE, Bodies, sse
from prefkit.serve.scheduler import Event, QueueFull, Ticket
from prefkit.serve.state import ServedModel, ServerState
from prefkit.web.errors import APIError, bad_request, error_body

CLIENT_CLOSED = 499  # nginx's code for "the client closed the connection"; no one reads this response


class Job:
    def __init__(
        self,
        state: ServerState,
        served: ServedModel,
        prompts: list[list[int]],
        body: Any,
        *,
        default_max_tokens: int,
    ) -> None:
        self.state = state
        self.served = served
        self.prompts = prompts
        self.body = body
        self.default_max_tokens = default_max_tokens
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.tickets: list[Ticket] = []
        self.texts = [""] * len(prompts)
        self.finish: list[str | None] = [None] * len(prompts)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        chat = hasattr(body, "messages")
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.bodies = Bodies(ident, int(time.time()), served.name, chat, include_usage)

    def _requests(self, stop: StopCondition) -> list[GenerationRequest]:
        body, max_len = self.body, self.state.max_model_len
        asked = body.requested_max_tokens()
        out = []
        for ids in self.prompts:
            if asked is not None and len(ids) + asked > max_len:
                raise bad_request(
                    f"This model's maximum context length is {max_len} tokens. However, you requested "
                    f"{len(ids) + asked} tokens ({len(ids)} in the prompt, {asked} in the completion). "
                    "Please reduce the prompt or max_tokens.",
                    "max_tokens",
                    "context_length_exceeded",
                )
            settings = default_settings(
                self.state.loaded.model,
                max_new_tokens=asked
                if asked is not None
                else min(self.default_max_tokens, max_len - len(ids)),
                temperature=body.temperature,
                top_p=body.top_p,
                top_k=max(body.top_k, 0) if body.top_k is not None else None,
                repetition_penalty=body.repetition_penalty,
                seed=body.seed,
            )
            out.append(GenerationRequest(ids, settings, stop, self.served.adapter, max_len, body.ignore_eos))
        return out

    def submit(self, stop: StopCondition) -> None:
        try:
            self.tickets = self.state.scheduler.submit(self._requests(stop), self.queue)
        except QueueFull:
            raise APIError(
                429,
                f"The server is busy: {self.state.scheduler.waiting} requests are waiting (the limit is "
                f"{self.state.limits.max_queue}). Please retry shortly.",
                code="queue_full",
            ) from None

    def cancel(self) -> None:
        if any(f is None for f in self.finish):
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

    # -- answering ----------------------------------------------------------------------------------
    async def respond(self, request: Request) -> Any:
        if self.body.stream:
            return StreamingResponse(
                self._stream(),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return await self._whole(request)

    async def _drain(self) -> None:
        async for _ in self.events():
            pass

    async def _whole(self, request: Request) -> Any:
        generation = asyncio.create_task(self._drain())
        watcher = asyncio.create_task(until_disconnected(request))
        try:
            done, _ = await asyncio.wait({generation, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if generation not in done:  # the client went away first
                generation.cancel()
                return JSONResponse(
                    error_body(CLIENT_CLOSED, "client disconnected"), status_code=CLIENT_CLOSED
                )
            generation.result()  # raises the APIError of a failed generation
            return self.bodies.whole(self.texts, self.finish, self.usage())
        finally:
            watcher.cancel()
            self.cancel()

    async def _stream(self) -> AsyncIterator[bytes]:
        try:
            for chunk in self.bodies.opening():
                yield sse(chunk)
            async for event in self.events():
                finish = self.finish[event.index] if event.finished else None
                yield sse(self.bodies.piece(event, finish))
            if self.bodies.include_usage:
                yield sse(self.bodies.usage(self.usage()))
            yield SSE_DONE
        except APIError as err:  # headers are sent: the error goes in the stream, as OpenAI does
            yield sse(err.body())
        finally:
            self.cancel()  # the client disconnected (Starlette cancelled this generator), or it failed


async def until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
