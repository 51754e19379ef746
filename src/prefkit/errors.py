"""The base of every error that is the user's to fix (a bad config key, unusable data, a missing file).

The CLI prints these as they are -- their messages already name the file, line, key and what was
expected -- and exits 2; anything else is a bug in prefkit and keeps its traceback.
"""


class PrefkitError(ValueError):
    """An error in the user's input or environment, with a message written for the user."""


USER_ERRORS: tuple[type[BaseException], ...] = (PrefkitError,)
