"""The web page for runs and chat (``prefkit serve --ui``, ``prefkit ui``); see docs/ui.md. It never starts a
server: :mod:`prefkit.serve` mounts its router (:func:`prefkit.serve.ui.serve_ui`).

``runs`` scans a runs directory and reads its run folders tolerantly; ``metrics`` reads metrics.jsonl
incrementally for live curves; ``routes`` is the HTTP side (the page, its static files, ``/ui/api``);
``static/`` is the page itself: plain JavaScript modules, no build step, nothing loaded from elsewhere.

May import: web, evaluate (the comparison of runs) and what they stand on."""

from prefkit.ui.routes import mount_ui
from prefkit.ui.runs import RunsDir

__all__ = ["RunsDir", "mount_ui"]
