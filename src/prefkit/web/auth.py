"""API keys: with ``--api-key`` (or ``$PREFKIT_API_KEY``), every ``/v1`` request must carry
``Authorization: Bearer KEY``. The comparison takes the same time however much of a wrong key matches
(``hmac.compare_digest``), so a key cannot be guessed a character at a time. ``/health`` stays open
for load balancers and container health checks."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import Request

from prefkit.web.errors import APIError

API_KEY_ENV = "PREFKIT_API_KEY"


def check_api_key(header: str | None, key: str) -> None:
    """Raise a 401 unless ``header`` is ``Bearer <key>``."""
    scheme, _, given = (header or "").partition(" ")
    valid = hmac.compare_digest(given.strip().encode(), key.encode())
    if scheme.lower() != "bearer" or not valid:
        message = (
            "Incorrect API key provided."
            if header
            else "You didn't provide an API key: send it as 'Authorization: Bearer KEY'."
        )
        raise APIError(401, message, code="invalid_api_key")


def require_api_key(key: str | None) -> Callable[[Request], None]:
    """A FastAPI dependency that checks the request's key (nothing to check without one)."""

    def authorised(request: Request) -> None:
        if key is not None:
            check_api_key(request.headers.get("authorization"), key)

    return authorised
