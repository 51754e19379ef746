"""The thread that owns the model, between the HTTP handlers (asyncio) and the decoder
(:mod:`prefkit.infer.decode`).

Handlers :meth:`Scheduler.submit` requests and read their text from an ``asyncio.Queue``; they never
touch the model, so the event loop stays free (``/health`` answers while a batch decodes). Requests
wait in a bounded inbox until the decoder has a free slot; a full inbox refuses at once
(:class:`QueueFull`, a 429). The thread moves waiting requests into the decoder whenever a slot is
free -- between decode steps, so new requests join a running batch -- and pushes every step's text to
the requests' queues. A cancelled request (its client went away) leaves the inbox at once, or the
running batch at the next step.

A sequence the decoder ends with an error (its own row's logits went non-finite) fails its request
alone; the others in the batch go on. If a whole step fails (out of memory, a bug), every request in
flight gets the error, the decoder is rebuilt empty, and the thread goes on serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from prefkit.infer.decode import Decoder, Request, Sequence, Update

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    pass


@dataclass(frozen=True)
class Event:
    index: int  # which of the request's prompts (completions may send several)
    text: str
    finished: bool
    error: str | None = None


@dataclass(eq=False)
class Ticket:
    """One submitted sequence, as its HTTP handler sees it."""

    seq: Sequence
    queue: asyncio.Queue[Event]
    loop: asyncio.AbstractEventLoop
    index: int = 0

    def push(self, event: Event) -> None:
        """From the scheduler thread: hand ``event`` to the handler's event loop."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server is shutting down
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)


@dataclass
class Scheduler:
    make_decoder: Callable[[], Decoder]
    max_queue: int
    decoder: Decoder = field(init=False)
    _inbox: deque[Ticket] = field(init=False, default_factory=deque)
    _tickets: dict[int, Ticket] = field(init=False, default_factory=dict)  # by id(seq), admitted ones
    _cond: threading.Condition = field(init=False, default_factory=threading.Condition)
    _stopping: bool = field(init=False, default=False)
    _thread: threading.Thread | None = field(init=False, default=None)
    # Totals since start, for /health: finished requests by outcome and tokens generated.
    stats: dict[str, int] = field(
        init=False,
        default_factory=lambda: {"completed": 0, "cancelled": 0, "failed": 0, "generated_tokens": 0},
    )

    def __post_init__(self) -> None:
        self.decoder = self.make_decoder()

    # -- the handlers' side (event loop thread) -----------------------------------------------------
    def submit(self, requests: list[Request], queue: asyncio.Queue[Event]) -> list[Ticket]:
        """Queue every request or none (QueueFull when the inbox has no room for all of them)."""
        loop = asyncio.get_running_loop()
        tickets = [Ticket(self.decoder.sequence(r), queue, loop, i) for i, r in enumerate(requests)]
        with self._cond:
            if len(self._inbox) + len(tickets) > self.max_queue:
                raise QueueFull
            self._inbox.extend(tickets)
            self._cond.notify()
        return tickets

    def cancel(self, tickets: list[Ticket]) -> None:
        with self._cond:
            for ticket in tickets:
                ticket.seq.cancel()
                if ticket in self._inbox:
                    self._inbox.remove(ticket)
                    self.stats["cancelled"] += 1

    @property
    def waiting(self) -> int:
        return len(self._inbox)

    @property
    def running(self) -> int:
        return len(self._tickets)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="prefkit-decode", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the scheduler thread -----------------------------------------------------------------------
    def _admit(self) -> None:
        """Move waiting tickets into the decoder while it has free slots; sleep while there is no work."""
        with self._cond:
            while not self._stopping and not self._inbox and not self.decoder.has_work:
                self._cond.wait()
            free = self.decoder.max_batch - len(self.decoder.running) - len(self.decoder.waiting)
            while self._inbox and free > 0:
                ticket = self._inbox.popleft()
                self._tickets[id(ticket.seq)] = ticket
                self.decoder.add(ticket.seq)
                free -= 1

    def _loop(self) -> None:
        while True:
            self._admit()
            if self._stopping:
                self._fail_all("the server is shutting down")
                return
            try:
                updates = self.decoder.step()
            except Exception as err:
                logger.exception("a decode step failed; failing the requests in flight")
                self._fail_running(f"generation failed: {type(err).__name__}: {err}")
                self.decoder = self.make_decoder()
                continue
            for update in updates:
                self._deliver(update)

    def _deliver(self, update: Update) -> None:
        ticket = self._tickets[id(update.seq)]
        error = None
        if update.finished:
            del self._tickets[id(update.seq)]
            reason = update.seq.finish_reason
            outcome = {"cancelled": "cancelled", "error": "failed"}.get(reason or "", "completed")
            self.stats[outcome] += 1
            self.stats["generated_tokens"] += update.seq.completion_tokens
            if reason == "error":
                logger.warning("a sequence failed alone: %s", update.seq.error)
                error = f"generation failed: {update.seq.error}"
        if update.text or update.finished:
            ticket.push(Event(ticket.index, update.text, update.finished, error))

    def _fail_running(self, message: str) -> None:
        for ticket in self._tickets.values():
            ticket.push(Event(ticket.index, "", True, message))
        self.stats["failed"] += len(self._tickets)
        self._tickets.clear()

    def _fail_all(self, message: str) -> None:
        self._fail_running(message)
        with self._cond:
            for ticket in self._inbox:
                ticket.push(Event(ticket.index, "", True, message))
            self._inbox.clear()
