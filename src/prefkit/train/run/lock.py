"""One process at a time: an flock on a lock file, released when the holder's block ends or its process
does, however it ends (a kill included). The file says who holds it, for the refusal's message."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def held(lock_file: Path, busy: Callable[[str], Exception]) -> Iterator[None]:
    """Hold ``lock_file`` for the block; if another process holds it, raise ``busy(holder)`` (holder: "pid
    N"). Local locks: processes on other machines sharing the folder are not seen; on systems without
    fcntl no lock is taken."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with lock_file.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            raise busy(handle.read().strip() or "another process") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
