"""The prompts a server's arena draws from (``--prompts FILE``): any file ``prefkit generate`` reads --
``{"prompt": ...}`` or ``{"messages": [...]}`` lines, or a preference or SFT data file, whose prompts
are used (a held-out split is the usual choice)."""

from __future__ import annotations

import os

from prefkit.data.examples import Message
from prefkit.errors import BadDataError
from prefkit.infer.prompts import read_prompts

SHOWN = 20  # problems listed in the error


def load_prompts(path: str | os.PathLike[str]) -> list[tuple[Message, ...]]:
    """Every prompt of ``path``; a BadDataError listing the records that have none (the server starts
    with all of them or not at all: a prompt silently missing would bias what people vote on)."""
    items, problems = read_prompts(path)
    if problems:
        shown = "\n".join(f"  {p}" for p in problems[:SHOWN])
        more = f"\n  ... and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
        raise BadDataError(
            f"--prompts {path}: {len(problems)} record(s) hold no usable prompt:\n{shown}{more}"
        )
    if not items:
        raise BadDataError(f"--prompts {path}: the file holds no prompts")
    for item in items:
        for message in item.messages:
            try:
                message.content.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate ("\\ud800" in JSON): no page could show it
                raise BadDataError(
                    f"--prompts {item.location}: a message holds a lone UTF-16 surrogate escape, which is "
                    "not a character; fix the text"
                ) from None
    return [tuple(item.messages) for item in items]
