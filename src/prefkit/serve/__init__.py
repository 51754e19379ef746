"""An OpenAI-compatible HTTP server for a model and its trained adapters (``prefkit serve``)."""

from prefkit.serve.limits import ServeLimits
from prefkit.serve.server import build_state, serve

__all__ = ["ServeLimits", "build_state", "serve"]
