"""An OpenAI-compatible HTTP server for a model and its trained adapters (``prefkit serve``), and the one
that serves the web page (``prefkit ui``, :mod:`~prefkit.serve.ui`): the app, request limits, the
scheduler thread that owns the decoder, streaming responses.

May import: ui, web, infer, model and what they stand on."""

from prefkit.serve.limits import ServeLimits
from prefkit.serve.server import build_state, serve

__all__ = ["ServeLimits", "build_state", "serve"]
