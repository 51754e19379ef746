"""Every limit the server enforces, its default, and the two that guard the connection itself: a
request body must arrive whole, within a size and a time, and request headers must arrive in time.

What each limit bounds (and so what bounds the server's memory):

* ``max_batch`` sequences decode together; their KV cache is at most ``max_batch * max_model_len``
  tokens.
* ``max_queue`` requests wait for a slot; one more gets 429.
* ``max_tokens`` caps a request's ``max_tokens``; above it is a 400. ``max_model_len`` caps prompt +
  reply; a prompt that leaves no room is a 400.
* ``max_body_bytes`` per request body (413), which must arrive within ``body_timeout`` seconds (408).
* ``header_timeout``: a connection that has not sent a complete request head this long after it
  opened (or after its first byte of a next request) is closed.
* ``max_connections`` open connections; a request beyond them gets 503 from uvicorn.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect, Request
from uvicorn.protocols.http.h11_impl import H11Protocol

from prefkit.errors import PrefkitError
from prefkit.web.errors import APIError, bad_request


@dataclass(frozen=True)
class ServeLimits:
    max_batch: int = 8
    max_queue: int = 64
    max_tokens: int = 512
    max_model_len: int | None = None  # None: the model's context length, at most DEFAULT_MODEL_LEN
    max_body_bytes: int = 1 << 20
    body_timeout: float = 30.0
    header_timeout: float = 10.0
    max_connections: int = 256

    def check(self) -> None:
        for name in ("max_batch", "max_queue", "max_tokens", "max_body_bytes", "max_connections"):
            if getattr(self, name) < 1:
                raise PrefkitError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be at least 1")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise PrefkitError(f"--max-model-len {self.max_model_len}: must be at least 2")
        if self.body_timeout <= 0 or self.header_timeout <= 0:
            raise PrefkitError("--body-timeout and --header-timeout: must be more than 0 seconds")


DEFAULT_MODEL_LEN = 4096  # prefill of longer prompts is slow and memory-hungry on a CPU; raise it by hand


def model_len(limits: ServeLimits, context_length: int | None) -> int:
    if limits.max_model_len is not None:
        return min(limits.max_model_len, context_length) if context_length else limits.max_model_len
    return min(context_length or DEFAULT_MODEL_LEN, DEFAULT_MODEL_LEN)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"the request body is {declared} bytes; the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise APIError(413, f"the request body is over the limit of {limit} bytes")
    return bytes(body)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# JSON's \ud800 escapes decode to a lone surrogate: a str no tokenizer can encode (and no UTF-8 can
# carry). A valid pair is already one character after json.loads, so any surrogate left is lone.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _lone_surrogate(data: Any) -> str | None:
    """The dotted path (``messages.0.content``) of a string in ``data`` -- value or key -- that
    holds a lone surrogate, else None. A loop, not recursion: the body may be nested deeply."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return path
        elif isinstance(value, dict):
            for key, item in value.items():
                where = f"{path}.{key}" if path else str(key)
                if _SURROGATE.search(key):
                    return where
                stack.append((where, item))
        elif isinstance(value, list):
            stack.extend((f"{path}.{i}" if path else str(i), item) for i, item in enumerate(value))
    return None


async def read_json(request: Request, limits: ServeLimits) -> dict[str, Any]:
    """The request's JSON object, or an APIError: 413 too large, 408 too slow, 400 not a JSON object or a
    string in it that is not valid Unicode (a lone surrogate)."""
    try:
        raw = await asyncio.wait_for(_read_body(request, limits.max_body_bytes), limits.body_timeout)
    except TimeoutError:
        raise APIError(408, f"the request body did not arrive within {limits.body_timeout:g} s") from None
    except ClientDisconnect:
        raise APIError(400, "the client disconnected while sending the body") from None
    try:
        data = json.loads(raw, parse_constant=_no_constants)
    except (ValueError, RecursionError) as err:
        raise bad_request(f"We could not parse the JSON body of your request: {err}") from None
    if not isinstance(data, dict):
        raise bad_request("The request body must be a JSON object.")
    if (where := _lone_surrogate(data)) is not None:
        raise bad_request(
            f"Invalid value for '{where}': it holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff "
            "escape), which is not a character; send valid Unicode.",
            where,
        )
    return data


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for request heads (uvicorn has none: a client that
    connects and sends nothing, or half a header, would hold its connection forever)."""

    header_timeout = ServeLimits.header_timeout

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_deadline: asyncio.TimerHandle | None = self.loop.call_later(
            self.header_timeout, self._head_timed_out
        )

    def _awaiting_head(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._awaiting_head():
            if self._head_deadline is None:  # the first bytes of a next request on a kept-alive connection
                self._head_deadline = self.loop.call_later(self.header_timeout, self._head_timed_out)
        elif self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None
        super().connection_lost(exc)

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self._awaiting_head() and not self.transport.is_closing():
            self.transport.close()
