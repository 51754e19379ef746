"""What every `prefkit` command shares: logging set-up, and turning errors into messages and exit codes
(see prefkit.errors): the user's errors print as written, Ctrl-C exits 130, anything else is reported as
a prefkit bug with its traceback in a log file."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import click
import typer
from rich.console import Console

import prefkit
from prefkit.errors import EXIT_INTERNAL, EXIT_USER, PrefkitError

P = ParamSpec("P")
R = TypeVar("R")

console = Console(soft_wrap=True)  # never wrap: lines carry paths people copy


class Options:
    """Settings of the `prefkit` command itself (set by its callback before any command runs)."""

    verbose = False  # `prefkit --verbose`: debug logging, tracebacks of internal errors on stderr too


class _LevelPrefix(logging.Formatter):
    """`warning: ...` for warnings and errors; plain text for info. Never wrapped: messages carry paths."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def setup_logging(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LevelPrefix("%(message)s"))
    level = logging.DEBUG if verbose or Options.verbose else logging.INFO
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def fail(message: str, code: int = EXIT_USER) -> typer.Exit:
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(code)


def internal_error(err: BaseException) -> typer.Exit:
    """A bug in prefkit: a short note for the user, the traceback in a log file (and on stderr with
    --verbose), and its own exit code so scripts can tell it from bad data or a bad config."""
    import tempfile
    import time
    import traceback

    text = "".join(traceback.format_exception(err))
    log = None
    from prefkit.env import cache_dir

    for folder in (cache_dir() / "logs", Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            log = folder / f"prefkit-crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
            log.write_text(f"prefkit {prefkit.__version__}\n{' '.join(sys.argv)}\n\n{text}", encoding="utf-8")
            break
        except OSError:
            log = None
    if Options.verbose:
        print(text, file=sys.stderr, end="")
    where = f"the traceback is in {log}" if log else "run again with --verbose for the traceback"
    first = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
    return fail(
        f"internal error: {type(err).__name__}{': ' + first if first else ''}\n"
        f"This is a prefkit bug, please report it (with the command you ran); {where}.",
        EXIT_INTERNAL,
    )


def reported(command: Callable[P, R]) -> Callable[P, R]:
    """Run a command, turning errors into messages and exit codes (see prefkit.errors): the user's
    errors print as written, Ctrl-C exits 130, anything else is reported as a prefkit bug."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, click.exceptions.ClickException):
            raise
        except PrefkitError as err:
            raise fail(str(err), err.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None
        except Exception as err:
            raise internal_error(err) from None

    return run
