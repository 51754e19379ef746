"""The arena's HTTP side, under ``/ui/api/arena`` (the page's Arena tab uses it; so can a script):

- ``GET /ui/api/arena``: whether battles can be opened here, the models, the prompts file, the votes;
- ``GET /ui/api/arena/prompt``: a prompt drawn from ``--prompts`` (each once, in random order, then again);
- ``POST /ui/api/arena/battles`` ``{"prompt": text | messages, "max_tokens", "temperature", "top_p",
  "seed", "stream"}``: two served models answer the prompt, unnamed, as ``a`` and ``b``: one JSON answer
  ``{"id", "prompt", "a": {"reply", "finish_reason"}, "b": {...}}``, or with ``stream`` server-sent
  events ``{"id", "prompt"}``, then ``{"side", "text"}`` pieces and ``{"side", "finish_reason"}``, then
  ``[DONE]``;
- ``POST /ui/api/arena/battles/{id}/vote`` ``{"winner": "a" | "b" | "tie" | "both_bad", "voter"}``: the
  vote is written to ``RUNS_DIR/arena/votes.jsonl`` and synced to disk, then the names are told;
- ``GET /ui/api/arena/stats``: :func:`prefkit.arena.stats.arena_stats` of the votes file.

The same API key and limits as the rest of the page. Both sides are generated with the same sampling
settings and the same seed (drawn per battle when none is given, and recorded), through the same
scheduler as ``/v1``: a battle's two replies join the running batch, together when two slots are free.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import random
import time
import unicodedata
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from prefkit.arena.battles import Battle, BattleBook, BattleError
from prefkit.arena.stats import arena_stats
from prefkit.arena.votes import LOCK_TIMEOUT, Vote, VotesError, VotesLocked, append_vote, read_votes
from prefkit.data.examples import Message
from prefkit.serve.app import parse_body
from prefkit.serve.arena_replies import NO_STORE, start_replies, stream_replies, whole_replies
from prefkit.serve.limits import read_json
from prefkit.serve.schemas import ArenaBattleRequest, ArenaVoteRequest, ChatMessage
from prefkit.serve.state import ServerState
from prefkit.web.auth import require_api_key
from prefkit.web.errors import APIError, bad_request

logger = logging.getLogger(__name__)

STATS_BOOTSTRAP = 200  # resamples for the page's intervals (`prefkit arena stats` takes more)


@dataclasses.dataclass
class Arena:
    """What the arena routes work from: the votes file, the prompts to draw from, and -- when two or more
    models are served -- the server and its open battles."""

    votes_path: Path
    prompts: list[tuple[Message, ...]]
    prior_votes: list[Vote] = dataclasses.field(default_factory=list)
    unreadable: str | None = None  # why the votes file cannot be read (then no battles: see the reason)
    deck: list[int] = dataclasses.field(default_factory=list)  # prompts not drawn yet this round
    state: ServerState | None = None
    book: BattleBook | None = None
    # Votes are written one at a time, off the event loop, in their own thread: a slow disk or a lock
    # held elsewhere holds up votes, never the shared thread pool that tokenises prompts.
    writer: concurrent.futures.ThreadPoolExecutor = dataclasses.field(
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="prefkit-votes")
    )

    @classmethod
    def prepare(cls, votes_path: Path, prompts: list[tuple[Message, ...]]) -> Arena:
        """Read the votes so far (before a model loads: a bad file is found at once). A file that cannot
        be read turns battles off with the reason, rather than the server: /v1 and chat still serve."""
        try:
            return cls(votes_path, prompts, read_votes(votes_path).votes)
        except VotesError as err:
            logger.warning("the arena is off: %s", err)
            return cls(votes_path, prompts, unreadable=str(err))

    def attach(self, state: ServerState) -> Arena:
        """Open battles between ``state``'s models (two or more). The votes are read again: another server
        sharing the folder may have added some while the model loaded."""
        self.state = state
        if self.unreadable is None and len(state.models) >= 2:
            try:
                self.prior_votes = read_votes(self.votes_path).votes
            except VotesError as err:
                self.unreadable = str(err)
                return self
            self.book = BattleBook(list(state.models), self.prior_votes)
        return self

    def draw(self) -> int:
        """The next prompt's place in the file: every prompt once, in a random order, then again in a new
        one -- a study covers the file evenly rather than drawing some prompts three times and others
        never."""
        if not self.deck:
            self.deck = list(range(len(self.prompts)))
            random.SystemRandom().shuffle(self.deck)
        return self.deck.pop()

    def disabled_reason(self) -> str | None:
        if self.state is None:
            return "no model is served: start the page with --model M --adapter NAME=RUN (two models or more)"
        if self.unreadable is not None:
            return f"its votes file cannot be read, fix it and restart the server: {self.unreadable}"
        if self.book is None:
            return "the arena needs two models or more: serve an adapter too (--adapter NAME=RUN)"
        return None


def mount_arena(app: FastAPI, arena: Arena, *, api_key: str | None) -> None:
    router = APIRouter(prefix="/ui/api/arena", dependencies=[Depends(require_api_key(api_key))])
    _add_read_routes(router, arena)
    _add_battle_routes(router, arena)
    app.include_router(router)


def _json(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=NO_STORE)


def _add_read_routes(router: APIRouter, arena: Arena) -> None:
    @router.get("")
    async def info() -> JSONResponse:
        state = arena.state
        if arena.book is not None:
            votes: int | None = arena.book.total_votes
        else:  # no battles here: count what the file holds now (None if it cannot be read)
            try:
                votes = len((await _votes(arena)).votes)
            except APIError:
                votes = None
        return _json(
            {
                "enabled": arena.book is not None,
                "reason": arena.disabled_reason(),
                "models": list(state.models) if state else [],
                "prompts": len(arena.prompts),
                "votes": votes,
                "max_tokens": state.limits.max_tokens if state else None,
            }
        )

    @router.get("/prompt")
    async def prompt() -> JSONResponse:
        if not arena.prompts:
            raise APIError(404, "This server has no prompts file (--prompts FILE).", code="no_prompts")
        index = arena.draw()
        return _json({"index": index, "prompt": [m.to_dict() for m in arena.prompts[index]]})

    @router.get("/stats")
    async def stats() -> JSONResponse:
        read = await _votes(arena)
        figures = await run_in_threadpool(arena_stats, read.votes, bootstrap=STATS_BOOTSTRAP)
        return _json({**figures.to_json(), "skipped_lines": read.warnings()})


async def _votes(arena: Arena) -> Any:
    try:
        return await run_in_threadpool(read_votes, arena.votes_path)
    except ValueError as err:  # a line that is not a vote: the file needs a person's look
        raise APIError(500, str(err), code="votes_unreadable") from None


def _add_battle_routes(router: APIRouter, arena: Arena) -> None:
    @router.post("/battles")
    async def battle(request: Request) -> Any:
        book, state = _enabled(arena)
        body: ArenaBattleRequest = parse_body(ArenaBattleRequest, await read_json(request, state.limits))
        messages = _messages(body)
        opened = _open(arena, book, tuple(_as_chat(messages)), body.prompt_index)
        try:
            jobs = await start_replies(state, opened, messages, body)
        except BaseException:
            book.discard(opened.id)
            raise
        if body.stream:
            return StreamingResponse(
                stream_replies(book, opened, jobs),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return await whole_replies(request, book, opened, jobs)

    @router.post("/battles/{battle_id}/vote")
    async def vote(battle_id: str, request: Request) -> JSONResponse:
        book, state = _enabled(arena)
        body: ArenaVoteRequest = parse_body(ArenaVoteRequest, await read_json(request, state.limits))
        try:
            chosen = book.start_vote(battle_id, body.winner, _voter(body.voter))
        except BattleError as err:
            raise APIError(err.status, str(err), code=err.code) from None
        deadline = time.monotonic() + LOCK_TIMEOUT  # from now: votes queued behind a held lock share it
        written = asyncio.get_running_loop().run_in_executor(
            arena.writer, _write_vote, arena.votes_path, chosen, deadline
        )
        try:
            await asyncio.shield(written)
        except asyncio.CancelledError:  # the voter left: the write goes on, and counts if it lands
            written.add_done_callback(lambda done: _settle(book, chosen, done))
            raise
        except Exception as err:  # not on disk (append_vote cut it back out): the voter may vote again
            book.not_recorded(chosen)
            if isinstance(err, VotesLocked):
                raise APIError(
                    503, f"The vote was not counted: {err}. Please vote again.", code="votes_locked"
                ) from None
            logger.exception("a vote could not be written to %s", arena.votes_path)
            raise APIError(
                500,
                f"The vote could not be written to {arena.votes_path} ({err}); it was not counted.",
                code="vote_not_written",
            ) from None
        book.recorded(chosen)
        return _json(
            {
                "id": chosen.id,
                "winner": chosen.winner,
                "a": {"model": chosen.a.model},
                "b": {"model": chosen.b.model},
                "votes": book.total_votes,
            }
        )


def _settle(book: BattleBook, vote: Vote, done: asyncio.Future[None]) -> None:
    if not done.cancelled() and done.exception() is None:
        book.recorded(vote)
    else:
        book.not_recorded(vote)


def _write_vote(path: Path, vote: Vote, deadline: float) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise VotesLocked(f"{path} stayed locked by another process while this vote waited its turn")
    append_vote(path, vote, lock_timeout=left)


JOINERS = {"\u200c", "\u200d"}  # zero-width (non-)joiners: part of names in Persian, emoji sequences


def _voter(name: str | None) -> str | None:
    """A voter's name as stored: trimmed, empty as none; control and format characters (a newline, an
    escape, a right-to-left override) are refused, as the name is shown in terminals and pages."""
    name = name.strip() if name is not None else None
    if not name:
        return None
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs") and c not in JOINERS for c in name):
        raise bad_request("voter: the name holds a control or format character.", "voter")
    return name


def _enabled(arena: Arena) -> tuple[BattleBook, ServerState]:
    if arena.book is None or arena.state is None:
        raise APIError(
            409, f"The arena is off on this server: {arena.disabled_reason()}.", code="arena_disabled"
        )
    return arena.book, arena.state


def _open(arena: Arena, book: BattleBook, prompt: tuple[Message, ...], index: int | None) -> Battle:
    """A new battle; a prompt drawn from the prompts file keeps its place there, unless it was edited."""
    if index is not None and index >= len(arena.prompts):
        raise bad_request(
            f"The prompts file has {len(arena.prompts)} prompts; no. {index} is not one.", "prompt_index"
        )
    try:
        battle = book.open(prompt)
    except BattleError as err:  # too many open battles: a 429, not a crash
        raise APIError(err.status, str(err), code=err.code) from None
    if index is not None and arena.prompts[index] == prompt:
        battle.prompt_index = index
    return battle


def _messages(body: ArenaBattleRequest) -> list[ChatMessage]:
    if isinstance(body.prompt, str):
        if not body.prompt.strip():
            raise bad_request("The prompt is empty.", "prompt")
        return [ChatMessage(role="user", content=body.prompt)]
    if not body.prompt:
        raise bad_request("The prompt has no messages.", "prompt")
    return body.prompt


def _as_chat(messages: list[ChatMessage]) -> list[Message]:
    return [Message("system" if m.role == "developer" else m.role, m.text()) for m in messages]
