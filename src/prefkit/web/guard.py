"""What keeps web pages in a user's browser from using a server meant for programs on this machine.

* **Host check** (DNS rebinding): a page on ``evil.example`` can make its own name resolve to 127.0.0.1
  and then read our answers as same-origin. Its requests still say ``Host: evil.example``, so a server
  that answers only to the names it is known by (``localhost``, loopback addresses, and the names listed
  with ``--allowed-host``) is out of its reach: anything else gets 421.
* **JSON only** (cross-site requests): any page may POST a ``text/plain`` (or form, or untyped) body to
  any address without the browser asking first (a CORS "simple" request); it cannot send
  ``application/json`` that way. So a body that is not declared ``application/json`` is refused with 415
  under ``/v1`` and ``/ui/api``, and a page elsewhere cannot make the server generate.

Both run before routing and before the API key, on every route (``/health`` included).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from prefkit.errors import PrefkitError
from prefkit.web.errors import APIError

JSON_PREFIXES = ("/v1/", "/ui/api/")
_BODY_METHODS = {"POST", "PUT", "PATCH"}


def _split_host(value: str) -> tuple[str, str] | None:
    """(name, port) of a Host header value (``name``, ``name:port``, ``[v6]:port`` or a bare IPv6
    address), the name lower-cased, without brackets and without the trailing dot of a fully qualified
    name (``models.example.com.`` is ``models.example.com``); None when it is not of that shape."""
    value = value.strip().lower()
    if value.startswith("["):
        name, bracket, port = value[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            return None
        port = port[1:]
    elif value.count(":") > 1:  # a bare IPv6 address: no port
        name, port = value, ""
    else:
        name, _, port = value.partition(":")
    name = name.removesuffix(".")
    if not name or (port and not (port.isascii() and port.isdigit())):
        return None
    return name, port


def is_loopback_name(name: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ``::1``; in brackets or not, any case)."""
    name = name.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_allow_list(bind: str, names: Iterable[str] = ()) -> frozenset[str] | None:
    """The Host names a server bound to ``bind`` answers to besides the loopback ones (``localhost``,
    127.0.0.0/8, ``::1``): ``names`` (``--allowed-host``). None -- any Host -- only for a server bound to
    a non-loopback address with no list, as before this check existed (the start-up log says so)."""
    listed = set()
    for given in names:
        split = _split_host(given)
        if split is None or split[1] or "/" in given or "*" in given or any(c.isspace() for c in given):
            raise PrefkitError(
                f"--allowed-host {given!r}: give a host name or address as clients write it in URLs, "
                "without a port, scheme or wildcard (example: --allowed-host models.example.com)"
            )
        listed.add(split[0])
    if listed or is_loopback_name(bind.strip("[]").lower()):
        return frozenset(listed)
    return None


def host_allowed(header: str | None, allowed: frozenset[str] | None) -> bool:
    # No Host header at all (HTTP/1.0 probes, simple clients) is no browser: browsers always send one.
    if allowed is None or header is None:
        return True
    split = _split_host(header or "")
    return split is not None and (is_loopback_name(split[0]) or split[0] in allowed)


def _is_json(content_type: str | None) -> bool:
    return (content_type or "").split(";", 1)[0].strip().lower() == "application/json"


class BrowserGuard:
    """ASGI middleware: the Host check and the JSON-only bodies (see the module docstring)."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str] | None) -> None:
        self.app = app
        self.allowed = allowed

    def _refusal(self, scope: Scope) -> APIError | None:
        headers = Headers(scope=scope)
        host = headers.get("host")
        if not host_allowed(host, self.allowed):
            shown = (host or "")[:100]
            return APIError(
                421,
                f"This server does not answer to the host name {shown!r}: it answers to localhost and "
                "loopback addresses, and to the names its operator listed (prefkit serve --allowed-host "
                "NAME).",
                code="host_not_allowed",
            )
        path = scope.get("path", "")
        if (
            scope.get("method") in _BODY_METHODS
            and (path + "/").startswith(JSON_PREFIXES)
            and not _is_json(headers.get("content-type"))
        ):
            given = headers.get("content-type")
            return APIError(
                415,
                "The request body must be JSON, sent with 'Content-Type: application/json' "
                f"(this request's Content-Type is {given[:100]!r})."
                if given
                else "The request body must be JSON, sent with 'Content-Type: application/json' "
                "(this request has no Content-Type).",
                param="Content-Type",
                code="unsupported_media_type",
            )
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (refusal := self._refusal(scope)) is not None:
            await refusal.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)
