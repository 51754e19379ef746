"""A battle's two replies: both sides checked and submitted to the server's scheduler together, then
read as they come -- streamed as server-sent events (``{"side", "text"}`` pieces, one
``{"side", "finish_reason"}`` per side) or gathered whole. A client that leaves, or a side that fails,
discards the battle (:mod:`prefkit.serve.arena` holds the routes)."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from prefkit.arena.battles import SIDES, Battle, BattleBook
from prefkit.infer.stop import StopCondition, stop_condition
from prefkit.serve.app import Checks
from prefkit.serve.jobs import Job, until_disconnected
from prefkit.serve.responses import SSE_DONE, sse
from prefkit.serve.schemas import ArenaBattleRequest, ChatCompletionRequest, ChatMessage
from prefkit.serve.state import ServerState
from prefkit.web.errors import APIError

DEFAULT_MAX_TOKENS = 256  # a reply a person reads whole; the server's --max-tokens caps it
SEED_BITS = 63
NO_STORE = {"Cache-Control": "no-store"}


async def start_replies(
    state: ServerState, battle: Battle, messages: list[ChatMessage], body: ArenaBattleRequest
) -> dict[str, Job]:
    """Both sides' jobs, checked (prompt, length, limits) and submitted: both or neither."""
    check = Checks(state)
    check.max_tokens(body.max_tokens)
    seed = body.seed if body.seed is not None else secrets.randbits(SEED_BITS)
    jobs: dict[str, Job] = {}
    for side in SIDES:
        served = check.model(battle.models[side])
        request = ChatCompletionRequest(
            model=served.name,
            messages=messages,
            max_tokens=body.max_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            seed=seed,
        )
        ids = await run_in_threadpool(check.chat_prompt, request, served)
        check.prompt_length(ids, "prompt")
        default = min(DEFAULT_MAX_TOKENS, state.limits.max_tokens)
        jobs[side] = Job(state, served, [ids], request, default_max_tokens=default)
    for side, job in jobs.items():
        model_stop = stop_condition(state.loaded.model, state.loaded.encoder(job.served.adapter))
        try:
            job.submit(StopCondition(model_stop.ids, model_stop.strings))
        except APIError:
            for other in jobs.values():
                other.cancel()
            raise
        battle.settings[side] = dataclasses.asdict(job.tickets[0].seq.request.settings)
    return jobs


async def _pieces(jobs: dict[str, Job]) -> AsyncIterator[tuple[str, Any]]:
    """Both sides' events as they come, each with its side; raises the first side's failure."""
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    async def pump(side: str, job: Job) -> None:
        try:
            async for event in job.events():
                await queue.put((side, event))
        except APIError as err:
            await queue.put((side, err))

    tasks = [asyncio.create_task(pump(side, job)) for side, job in jobs.items()]
    try:
        remaining = len(jobs)
        while remaining:
            side, item = await queue.get()
            if isinstance(item, APIError):
                raise item
            if item.finished:
                remaining -= 1
            yield side, item
    finally:
        for task in tasks:
            task.cancel()
        for job in jobs.values():
            job.cancel()


def _finish(battle: Battle, jobs: dict[str, Job], side: str) -> str | None:
    battle.finish[side] = jobs[side].finish[0]
    return battle.finish[side]


async def stream_replies(book: BattleBook, battle: Battle, jobs: dict[str, Job]) -> AsyncIterator[bytes]:
    done = False
    try:
        yield sse({"id": battle.id, "prompt": [m.to_dict() for m in battle.prompt]})
        async for side, event in _pieces(jobs):
            battle.replies[side] += event.text
            if event.text:
                yield sse({"side": side, "text": event.text})
            if event.finished:
                yield sse({"side": side, "finish_reason": _finish(battle, jobs, side)})
        battle.state = "ready"
        done = True
        yield SSE_DONE
    except APIError as err:  # headers are sent: the error goes in the stream
        battle.state, battle.error = "failed", err.message
        yield sse(err.body())
    finally:
        if not done:
            book.discard(battle.id)  # the client left, or a side failed: no vote can come


async def whole_replies(request: Request, book: BattleBook, battle: Battle, jobs: dict[str, Job]) -> Any:
    async def generate() -> None:
        async for side, event in _pieces(jobs):
            battle.replies[side] += event.text
            if event.finished:
                _finish(battle, jobs, side)

    generation = asyncio.create_task(generate())
    watcher = asyncio.create_task(until_disconnected(request))
    try:
        finished, _ = await asyncio.wait({generation, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if generation not in finished:
            generation.cancel()
            book.discard(battle.id)
            return JSONResponse(
                {"error": {"message": "client disconnected"}}, status_code=499, headers=NO_STORE
            )
        try:
            generation.result()
        except APIError:
            book.discard(battle.id)
            raise
    finally:
        watcher.cancel()
    battle.state = "ready"
    return JSONResponse(
        {
            "id": battle.id,
            "prompt": [m.to_dict() for m in battle.prompt],
            **{s: {"reply": battle.replies[s], "finish_reason": battle.finish[s]} for s in SIDES},
        },
        headers=NO_STORE,
    )
