"""The errors that are the user's to fix, and the exit codes of the `prefkit` command.

Every error whose message is written for the user (a bad config key, unusable data, a missing file) is
a :class:`PrefkitError`; the CLI prints its message as it is -- it already names the file, line, key and
what was expected -- and exits with the error's ``exit_code``. Anything else reaching the CLI is a bug
in prefkit: it exits :data:`EXIT_INTERNAL` with a short note and the traceback in a log file.

Exit codes (``prefkit data check`` and ``prefkit train`` agree on them):

* 0 -- done; for ``data check``, every example is usable.
* 1 -- :data:`EXIT_BAD_DATA`: the data is unusable (a file that cannot be read, a record that cannot
  be parsed, an example that fails a check).
* 2 -- :data:`EXIT_USER`: anything else the user must fix: the config, a path, the output folder,
  the machine (too little memory or disk).
* 3 -- :data:`EXIT_RUNS_FAILED`: ``prefkit sweep`` finished, but some of its runs failed (each run's
  error is on the leaderboard); the same command retries them.
* 70 -- :data:`EXIT_INTERNAL`: a bug in prefkit (``EX_SOFTWARE`` of sysexits.h).
* 130 / 143 -- training stopped by SIGINT / SIGTERM after saving a checkpoint (128 + the signal
  number, as a shell reports a process ended by that signal); the same command resumes it.
"""

from __future__ import annotations

EXIT_BAD_DATA = 1
EXIT_USER = 2
EXIT_RUNS_FAILED = 3
EXIT_INTERNAL = 70


class PrefkitError(ValueError):
    """An error in the user's input or environment, with a message written for the user."""

    exit_code: int = EXIT_USER


class BadDataError(PrefkitError):
    """The data itself is unusable (as opposed to a config or a path that is wrong)."""

    exit_code = EXIT_BAD_DATA


class TrainingInterrupted(PrefkitError):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint; running it again resumes."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


USER_ERRORS: tuple[type[BaseException], ...] = (PrefkitError,)
