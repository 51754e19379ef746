"""The web page for runs and chat (``prefkit serve --ui``, ``prefkit ui``); see docs/ui.md.

``runs`` scans a runs directory and reads its run folders tolerantly; ``metrics`` reads metrics.jsonl
incrementally for live curves; ``routes`` is the HTTP side (the page, its static files, ``/ui/api``);
``static/`` is the page itself: plain JavaScript modules, no build step, nothing loaded from elsewhere.
"""

from prefkit.ui.routes import mount_ui
from prefkit.ui.runs import RunsDir
from prefkit.ui.server import serve_ui

__all__ = ["RunsDir", "mount_ui", "serve_ui"]
