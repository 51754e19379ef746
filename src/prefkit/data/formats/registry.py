"""Every format, their aliases, and choosing one: detection by the records' keys, or by name."""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterable

from prefkit.data.formats.base import STAGES, Format, FormatError, shown_keys
from prefkit.data.formats.preference import (
    AlpacaRanking,
    PromptChat,
    PromptText,
    ShareGPTPair,
    ShareGPTRanking,
)
from prefkit.data.formats.sft import AlpacaSFT, MessagesSFT, ShareGPTSFT

FORMATS: list[Format] = [
    PromptText(),
    PromptChat(),
    ShareGPTPair(),
    ShareGPTRanking(),
    AlpacaRanking(),
    AlpacaSFT(),
    MessagesSFT(),
    ShareGPTSFT(),
]

# Other tools' words for our formats (TRL's "standard"/"conversational", OpenAI's "messages").
_ALIASES: dict[str, str] = {"standard": "prompt-text", "conversational": "prompt-chat", "openai": "messages"}


# -------------------------------------------------------------------------------- choosing a format


def check_stage(stage: str | None) -> None:
    if stage is not None and stage not in STAGES:
        raise FormatError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")


def _format_list(candidates: Iterable[Format]) -> str:
    lines = []
    for fmt in candidates:
        optional = f" [{', '.join(fmt.optional_keys)}]" if fmt.optional_keys else ""
        lines.append(f"  {fmt.stage} {fmt.name}: {', '.join(fmt.required_keys)}{optional}")
    return "\n".join(lines)


def detect(
    records: Iterable[object], candidates: list[Format], source: str | None, first_at: str | None = None
) -> Format:
    """The format most of the first 50 records match. ``first_at`` (``file:line`` of the first record)
    is where an error points: a whole-file problem still has a first record that shows it."""
    sample = [r for r in records if isinstance(r, dict)][:50]
    where = f"{first_at or source}: " if first_at or source else ""
    if not sample:
        raise FormatError(f"{where}no records that are JSON objects, so the format cannot be detected")
    # Each record votes for its most specific match; the majority wins, so a few broken records
    # (a dpo sharegpt record missing `rejected` also looks like sft sharegpt) do not flip it.
    votes: Counter[Format] = Counter()
    for record in sample:
        matching = [f for f in candidates if f.matches(record)]
        if matching:
            votes[max(matching, key=lambda f: (f.priority, len(f.required_keys)))] += 1
    if not votes:
        seen: dict[object, None] = {}
        for record in sample:
            seen.update(dict.fromkeys(record))
        elsewhere = [f.id for f in FORMATS if f not in candidates and any(f.matches(r) for r in sample)]
        hint = f" (they look like {' or '.join(elsewhere)}: is the stage right?)" if elsewhere else ""
        raise FormatError(
            f"{where}cannot tell the format: the records have keys {shown_keys(seen)}{hint}; "
            f"the known formats and their keys are:\n{_format_list(candidates)}\n"
            "Rename the columns (columns=...) or force a format (format=...)."
        )
    return max(votes, key=lambda f: (votes[f], f.priority, len(f.required_keys)))


def detect_format(
    records: Iterable[object], stage: str | None = None, *, source: str | None = None
) -> Format:
    """The format of ``records`` (raw values; non-dicts are ignored), judged by their keys."""
    check_stage(stage)
    return detect(records, [f for f in FORMATS if stage is None or f.stage == stage], source)


def find_formats(name: str, stage: str | None) -> list[Format]:
    key = name.strip().lower().replace("_", "-")
    for sep in (":", "/"):
        if sep in key:  # "dpo:alpaca", "sft/sharegpt"
            prefix, key = key.split(sep, 1)
            if stage is not None and prefix != stage:
                raise FormatError(f"format {name!r} is for stage {prefix!r}, not {stage!r}")
            check_stage(prefix)
            stage = prefix
    key = _ALIASES.get(key, key)
    return [f for f in FORMATS if f.name == key and (stage is None or f.stage == stage)]


def get_format(name: str | Format, stage: str | None = None) -> Format:
    """The format called ``name`` (``alpaca``, ``sft:alpaca``, ``prompt-chat``, ...).

    ``alpaca`` and ``sharegpt`` exist for both stages (as in LLaMA-Factory, where ``ranking``
    decides); without ``stage`` such a name is an error -- :func:`parse_file` resolves it by the
    records instead.
    """
    if isinstance(name, Format):
        return name
    check_stage(stage)
    found = find_formats(name, stage)
    if len(found) == 1:
        return found[0]
    if found:
        raise FormatError(
            f"format {name!r} exists for both stages ({', '.join(f.id for f in found)}); "
            "give stage='dpo' (preference) or stage='sft'"
        )
    names = {f.name for f in FORMATS if stage is None or f.stage == stage}
    valid = sorted(names | {alias for alias, target in _ALIASES.items() if target in names})
    close = difflib.get_close_matches(name.lower(), valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    scope = f" for stage {stage!r}" if stage else ""
    raise FormatError(f"unknown format {name!r}{scope}{hint}; valid formats: {', '.join(valid)}")
