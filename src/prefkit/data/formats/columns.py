"""LLaMA-Factory's ``columns`` and ``tags``: renaming a file's keys and message fields to ours."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prefkit.data.formats.base import LLAMAFACTORY_COLUMNS, Format, FormatError
from prefkit.data.formats.fields import decode_cell

_TAG_DEFAULTS: dict[str, str] = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "system_tag": "system",
    # LLaMA-Factory also knows these; their messages end up as unknown roles, which is the truth.
    "observation_tag": "observation",
    "function_tag": "function_call",
}
_MESSAGE_KEYS = ("conversations", "rejected_conversations", "messages", "prompt", "chosen", "rejected")


def _check_mapping(what: str, value: object, allowed: Iterable[str] | None = None) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise FormatError(f"{what} must map names to names (strings), got {value!r}")
    if allowed is not None:
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise FormatError(f"unknown {what} {', '.join(unknown)}; expected some of {', '.join(allowed)}")
    return value


def apply_columns(
    record: Mapping[str, Any],
    columns: Mapping[str, str] | None,
    tags: Mapping[str, str] | None,
    *,
    format: Format | None = None,
) -> dict[str, Any]:
    """LLaMA-Factory's ``columns`` and ``tags``, applied to one record.

    ``columns`` maps a LLaMA-Factory name (prompt, query, response, history, messages, system,
    chosen, rejected) to the file's column; the value lands under the key our parser reads
    (prompt -> instruction, query -> input, response -> output, messages -> conversations). A name
    outside that list is taken as our key itself. With a ``format`` given its own key names are
    used instead (prompt-text's ``prompt`` is ``prompt``).

    ``tags`` renames message fields and role values (role_tag, content_tag, user_tag,
    assistant_tag, system_tag) into role/content with user/assistant/system, so any message
    spelling reaches the same parser. This is the only place either is interpreted.
    """
    out = dict(record)
    if columns:
        columns = _check_mapping("columns", columns)
        targets = format.column_targets if format is not None else LLAMAFACTORY_COLUMNS
        moved = {targets.get(name, name): source for name, source in columns.items()}
        for source in set(moved.values()):
            out.pop(source, None)  # the file's own name goes away: it now lives under our key
        for target, source in moved.items():
            if source in record:
                out[target] = record[source]
            else:
                out.pop(target, None)  # mapped to a column the record lacks: report it as missing
    if tags:
        t = {**_TAG_DEFAULTS, **_check_mapping("tags", tags, _TAG_DEFAULTS)}
        roles = {t["user_tag"]: "user", t["assistant_tag"]: "assistant", t["system_tag"]: "system"}

        def retag(msg: object) -> object:
            if not isinstance(msg, dict) or (t["role_tag"] not in msg and t["content_tag"] not in msg):
                return msg
            new = {k: v for k, v in msg.items() if k not in (t["role_tag"], t["content_tag"])}
            if t["role_tag"] in msg:
                role = msg[t["role_tag"]]
                new["role"] = roles.get(role, role) if isinstance(role, str) else role
            if t["content_tag"] in msg:
                new["content"] = msg[t["content_tag"]]
            return new

        for key in _MESSAGE_KEYS:
            if key in out:
                value = decode_cell(out[key])
                if isinstance(value, list):
                    out[key] = [retag(m) for m in value]
                elif isinstance(value, dict):
                    out[key] = retag(value)
    return out
