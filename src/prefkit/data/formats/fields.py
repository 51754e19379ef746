"""Reading the fields of one record: text, roles, messages, replies, system prompts, alpaca history --
with an :class:`ExampleError` naming the field for anything of the wrong shape."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from prefkit.data import jsontext
from prefkit.data.examples import (
    Example,
    ExampleError,
    Message,
    Role,
)
from prefkit.data.jsontext import JsonProblem, TooLongInteger


class FormatLike(Protocol):
    """What these helpers read of a format (:class:`prefkit.data.formats.base.Format`): its name and stage
    for messages, and its way of requiring a key."""

    @property
    def name(self) -> str: ...

    @property
    def stage(self) -> str: ...

    def require(self, record: Mapping[str, Any], key: str) -> Any: ...


def type_name(value: object) -> str:
    if isinstance(value, TooLongInteger):
        return f"an integer of {value.digits} digits"
    names = {str: "string", dict: "object", list: "list", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def invisible(text: str) -> list[str]:
    """The invisible characters in ``text`` (zero-width spaces, joiners, BOMs, controls) as U+XXXX."""
    return [f"U+{ord(c):04X}" for c in text if unicodedata.category(c) in {"Cf", "Cc"} and c not in "\t\n\r"]


def visible_text(text: str) -> str:
    """``text`` without whitespace and invisible characters: what a reader of the reply would see."""
    return "".join(c for c in text if not c.isspace() and unicodedata.category(c) not in {"Cf", "Cc", "Zs"})


_SURROGATE = re.compile("[\ud800-\udfff]")


def decode_cell(value: object) -> object:
    """A CSV cell (or any string) holding a JSON message list/object -> the decoded value.

    Only a decoded object, or a list of objects, counts: a reply that merely starts with ``[``
    ("[1, 2, 3] are the primes...") stays the text it is.
    """
    if not isinstance(value, str):
        return value
    stripped = value.lstrip()
    if not stripped.startswith(("[", "{")):
        return value
    try:
        decoded = jsontext.loads(stripped)
    except JsonProblem:
        return value
    if isinstance(decoded, dict) or (
        isinstance(decoded, list) and all(isinstance(item, dict) for item in decoded)
    ):
        return decoded
    return value


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def read_string(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ExampleError(f"{where}: expected a string, got {type_name(value)}", "non_string")
    surrogate = _SURROGATE.search(value)
    if surrogate is not None:
        # JSON can spell half of a UTF-16 pair ("\ud800") that is no character at all; no tokenizer
        # can encode it. It comes from text cut in the middle of an emoji or a broken converter.
        raise ExampleError(
            f"{where}: holds a lone surrogate \\u{ord(surrogate.group()):04x} at character "
            f"{surrogate.start() + 1} (half of a UTF-16 pair, not a character: was an emoji cut in two?)",
            "encoding",
        )
    return value


_ROLE_ALIASES: dict[str, Role] = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "system": "system",
}
_SHAREGPT_ROLE: dict[str, str] = {"user": "human", "assistant": "gpt", "system": "system"}


def _role(value: object, where: str) -> Role:
    role = _ROLE_ALIASES.get(value.lower()) if isinstance(value, str) else None
    if role is None:
        shown = repr(value[:60]) if isinstance(value, str) else type_name(value)
        raise ExampleError(
            f"unknown role {shown} in {where} (expected one of user, assistant, system; or human, gpt)",
            "unknown_role",
        )
    return role


def read_message(obj: object, where: str) -> Message:
    """One message, either OpenAI style ``{role, content}`` or ShareGPT style ``{from, value}``."""
    if not isinstance(obj, dict):
        raise ExampleError(f"{where}: expected a message object, got {type_name(obj)}", "wrong_type")
    if "role" in obj or "content" in obj:
        role_key, content_key = "role", "content"
    else:
        role_key, content_key = "from", "value"
    if role_key not in obj:
        raise ExampleError(f"{where}: the message has no 'role' (or 'from')", "missing_key")
    if content_key not in obj:
        raise ExampleError(f"{where}: the message has no {content_key!r}", "missing_key")
    role = _role(obj[role_key], where)
    return Message(role, read_string(obj[content_key], f"{where}.{content_key}"))


def read_messages(value: object, where: str) -> list[Message]:
    value = decode_cell(value)
    if not isinstance(value, list):
        raise ExampleError(f"{where}: expected a list of messages, got {type_name(value)}", "wrong_type")
    out = [read_message(item, f"{where}[{i}]") for i, item in enumerate(value)]
    for i, msg in enumerate(out):
        if msg.role == "system" and i > 0:
            raise ExampleError(
                f"{where}[{i}]: a system message may only come first in the conversation", "bad_turns"
            )
    return out


def read_reply(value: object, where: str) -> str:
    """A chosen/rejected reply: one assistant message (as a list of one, a dict) or plain text."""
    value = decode_cell(value)
    if isinstance(value, str):
        return read_string(value, where)
    if isinstance(value, list):
        if len(value) != 1:
            raise ExampleError(
                f"{where}: expected one assistant message, got {len(value)} messages", "bad_turns"
            )
        value, where = value[0], f"{where}[0]"
    msg = read_message(value, where)
    if msg.role != "assistant":
        raise ExampleError(f"{where}: expected an assistant message, got {_a(msg.role)} message", "bad_turns")
    return msg.content


def optional_system(record: Mapping[str, Any]) -> str | None:
    # Absent, null (a Parquet column another row needed) and "" (an empty CSV cell) all mean "none".
    value = record.get("system")
    if value is None or value == "":
        return None
    return read_string(value, "system")


def with_system(messages: list[Message], system: str | None) -> list[Message]:
    if system is None:
        return messages
    if messages and messages[0].role == "system":
        if messages[0].content != system:
            raise ExampleError(
                "the record has both a 'system' key and a different leading system message", "bad_turns"
            )
        return messages
    return [Message("system", system), *messages]


def check_prompt(prompt: Sequence[Message], where: str) -> None:
    if not prompt or prompt[-1].role != "user":
        ends = f"ends with {_a(prompt[-1].role)} turn" if prompt else "is empty"
        raise ExampleError(f"{where}: the prompt must end with a user turn, but it {ends}", "bad_turns")


def check_sft(messages: Sequence[Message], where: str) -> None:
    if not messages or messages[-1].role != "assistant":
        ends = f"ends with {_a(messages[-1].role)} turn" if messages else "is empty"
        raise ExampleError(
            f"{where}: the conversation must end with an assistant turn (the training target), but it {ends}",
            "bad_turns",
        )


def check_first_turn(messages: Sequence[Message], where: str) -> None:
    """The first turn after any system message is the user's. ``messages`` are the record's own list (before
    a ``system`` key is added), so the index in the message is the one in the file."""
    first = 1 if messages and messages[0].role == "system" else 0
    if first < len(messages) and messages[first].role != "user":
        # A reply needs something to reply to: chat templates render nothing before a first assistant
        # turn, so its prompt would be empty (and many templates refuse it outright).
        raise ExampleError(
            f"{where}[{first}]: the conversation starts with an assistant turn; the first turn after "
            "any system message must be the user's",
            "bad_turns",
        )


def _history(value: object) -> list[Message]:
    """Alpaca ``history``: ``[[user, assistant], ...]``, the turns before the instruction."""
    if value is None or value == "":
        return []
    if isinstance(value, str):  # a CSV cell
        try:
            value = jsontext.loads(value)
        except JsonProblem as exc:
            raise ExampleError(f"history: not valid JSON: {exc.message}", "malformed_json") from None
    if not isinstance(value, list):
        raise ExampleError(
            f"history: expected a list of [user, assistant] pairs, got {type_name(value)}", "wrong_type"
        )
    out: list[Message] = []
    for i, pair in enumerate(value):
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise ExampleError(f"history[{i}]: expected a [user, assistant] pair", "wrong_type")
        out.append(Message("user", read_string(pair[0], f"history[{i}][0]")))
        out.append(Message("assistant", read_string(pair[1], f"history[{i}][1]")))
    return out


def split_alpaca(prompt: Sequence[Message], fmt: FormatLike) -> tuple[str | None, list[list[str]], str]:
    """prompt -> (system, history pairs, last user turn); alpaca can hold nothing else."""
    system = prompt[0].content if prompt and prompt[0].role == "system" else None
    turns = list(prompt[1:] if system is not None else prompt)
    roles = [m.role for m in turns]
    expected = ["user", "assistant"] * (len(turns) // 2) + ["user"]
    if roles != expected:
        raise ExampleError(
            f"{fmt.stage} {fmt.name} holds alternating user/assistant turns ending with a user turn; "
            f"this prompt's turns are {', '.join(roles) or 'none'}",
            "unconvertible",
        )
    history = [[turns[i].content, turns[i + 1].content] for i in range(0, len(turns) - 1, 2)]
    return system, history, turns[-1].content


def sharegpt_dicts(messages: Iterable[Message]) -> list[dict[str, str]]:
    return [{"from": _SHAREGPT_ROLE[m.role], "value": m.content} for m in messages]


def split_system(messages: Sequence[Message]) -> tuple[str | None, list[Message]]:
    if messages and messages[0].role == "system":
        return messages[0].content, list(messages[1:])
    return None, list(messages)


def need(example: Example, kind: type, fmt: FormatLike) -> None:
    if not isinstance(example, kind):
        raise ExampleError(
            f"{fmt.stage} {fmt.name} holds {kind.__name__}s, got a {type(example).__name__}", "wrong_type"
        )


def alpaca_prompt(fmt: FormatLike, record: Mapping[str, Any]) -> list[Message]:
    instruction = read_string(fmt.require(record, "instruction"), "instruction")
    query = record.get("input")
    query = "" if query is None else read_string(query, "input")
    # As LLaMA-Factory does: the input goes on its own line after the instruction, if any.
    content = f"{instruction}\n{query}" if query else instruction
    return with_system([*_history(record.get("history")), Message("user", content)], optional_system(record))


def alpaca_record(system: str | None, history: list[list[str]], instruction: str) -> dict[str, Any]:
    record: dict[str, Any] = {"instruction": instruction, "input": ""}
    if system is not None:
        record["system"] = system
    if history:
        record["history"] = history
    return record
