"""Source record shapes -> the internal examples, format detection, and writing back.

Each shape a dataset may come in (TRL's prompt/chosen/rejected, ShareGPT, alpaca, OpenAI
messages, ...) is one :class:`Format` object in :data:`FORMATS`: ``parse`` turns one record into a
:class:`PreferenceExample` or :class:`SFTExample` (or raises :class:`ExampleError`), ``to_record``
goes back. Nothing else in prefkit branches on the source shape; :func:`parse_file` is the single
entry point.

Parsers check *structure* only (keys, types, roles, turn order). Whether a reply is empty, a
duplicate, too long, or equal to its rejected twin is the validate module's job, so empty strings
are kept exactly as they are.
"""

from __future__ import annotations

import difflib
import json
import os
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from prefkit.data.examples import (
    Example,
    ExampleError,
    Location,
    Message,
    ParsedFile,
    PreferenceExample,
    Problem,
    Role,
    SFTExample,
    Stage,
)
from prefkit.data.readers import read_records, write_records
from prefkit.errors import PrefkitError

STAGES: tuple[Stage, ...] = ("dpo", "sft")


class FormatError(PrefkitError):
    """A file-level format problem: no format matches, an unknown format name, bad columns/tags."""


# ------------------------------------------------------------------------------------------ helpers


def _type_name(value: object) -> str:
    names = {str: "string", dict: "object", list: "list", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _decode_cell(value: object) -> object:
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
        decoded = json.loads(stripped)
    except (json.JSONDecodeError, RecursionError):
        return value
    if isinstance(decoded, dict) or (
        isinstance(decoded, list) and all(isinstance(item, dict) for item in decoded)
    ):
        return decoded
    return value


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _string(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ExampleError(f"{where}: expected a string, got {_type_name(value)}", "non_string")
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
        shown = repr(value) if isinstance(value, str) else _type_name(value)
        raise ExampleError(
            f"unknown role {shown} in {where} (expected one of user, assistant, system; or human, gpt)",
            "unknown_role",
        )
    return role


def _message(obj: object, where: str) -> Message:
    """One message, either OpenAI style ``{role, content}`` or ShareGPT style ``{from, value}``."""
    if not isinstance(obj, dict):
        raise ExampleError(f"{where}: expected a message object, got {_type_name(obj)}", "wrong_type")
    if "role" in obj or "content" in obj:
        role_key, content_key = "role", "content"
    else:
        role_key, content_key = "from", "value"
    if role_key not in obj:
        raise ExampleError(f"{where}: the message has no 'role' (or 'from')", "missing_key")
    if content_key not in obj:
        raise ExampleError(f"{where}: the message has no {content_key!r}", "missing_key")
    role = _role(obj[role_key], where)
    return Message(role, _string(obj[content_key], f"{where}.{content_key}"))


def _messages(value: object, where: str) -> list[Message]:
    value = _decode_cell(value)
    if not isinstance(value, list):
        raise ExampleError(f"{where}: expected a list of messages, got {_type_name(value)}", "wrong_type")
    out = [_message(item, f"{where}[{i}]") for i, item in enumerate(value)]
    for i, msg in enumerate(out):
        if msg.role == "system" and i > 0:
            raise ExampleError(
                f"{where}[{i}]: a system message may only come first in the conversation", "bad_turns"
            )
    return out


def _reply(value: object, where: str) -> str:
    """A chosen/rejected reply: one assistant message (as a list of one, a dict) or plain text."""
    value = _decode_cell(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        if len(value) != 1:
            raise ExampleError(
                f"{where}: expected one assistant message, got {len(value)} messages", "bad_turns"
            )
        value, where = value[0], f"{where}[0]"
    msg = _message(value, where)
    if msg.role != "assistant":
        raise ExampleError(f"{where}: expected an assistant message, got {_a(msg.role)} message", "bad_turns")
    return msg.content


def _optional_system(record: Mapping[str, Any]) -> str | None:
    # Absent, null (a Parquet column another row needed) and "" (an empty CSV cell) all mean "none".
    value = record.get("system")
    if value is None or value == "":
        return None
    return _string(value, "system")


def _with_system(messages: list[Message], system: str | None) -> list[Message]:
    if system is None:
        return messages
    if messages and messages[0].role == "system":
        if messages[0].content != system:
            raise ExampleError(
                "the record has both a 'system' key and a different leading system message", "bad_turns"
            )
        return messages
    return [Message("system", system), *messages]


def _check_prompt(prompt: Sequence[Message], where: str) -> None:
    if not prompt or prompt[-1].role != "user":
        ends = f"ends with {_a(prompt[-1].role)} turn" if prompt else "is empty"
        raise ExampleError(f"{where}: the prompt must end with a user turn, but it {ends}", "bad_turns")


def _check_sft(messages: Sequence[Message], where: str) -> None:
    if not messages or messages[-1].role != "assistant":
        ends = f"ends with {_a(messages[-1].role)} turn" if messages else "is empty"
        raise ExampleError(
            f"{where}: the conversation must end with an assistant turn (the training target), but it {ends}",
            "bad_turns",
        )


def _history(value: object) -> list[Message]:
    """Alpaca ``history``: ``[[user, assistant], ...]``, the turns before the instruction."""
    if value is None or value == "":
        return []
    if isinstance(value, str):  # a CSV cell
        try:
            value = json.loads(value)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise ExampleError(f"history: not valid JSON: {exc}", "malformed_json") from exc
    if not isinstance(value, list):
        raise ExampleError(
            f"history: expected a list of [user, assistant] pairs, got {_type_name(value)}", "wrong_type"
        )
    out: list[Message] = []
    for i, pair in enumerate(value):
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise ExampleError(f"history[{i}]: expected a [user, assistant] pair", "wrong_type")
        out.append(Message("user", _string(pair[0], f"history[{i}][0]")))
        out.append(Message("assistant", _string(pair[1], f"history[{i}][1]")))
    return out


def _split_alpaca(prompt: Sequence[Message], fmt: Format) -> tuple[str | None, list[list[str]], str]:
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


def _sharegpt_dicts(messages: Iterable[Message]) -> list[dict[str, str]]:
    return [{"from": _SHAREGPT_ROLE[m.role], "value": m.content} for m in messages]


def _split_system(messages: Sequence[Message]) -> tuple[str | None, list[Message]]:
    if messages and messages[0].role == "system":
        return messages[0].content, list(messages[1:])
    return None, list(messages)


def _need(example: Example, kind: type, fmt: Format) -> None:
    if not isinstance(example, kind):
        raise ExampleError(
            f"{fmt.stage} {fmt.name} holds {kind.__name__}s, got a {type(example).__name__}", "wrong_type"
        )


# ------------------------------------------------------------------------------------------ formats

# LLaMA-Factory's `columns` names -> the record keys our alpaca/sharegpt parsers read.
LLAMAFACTORY_COLUMNS: dict[str, str] = {
    "prompt": "instruction",
    "query": "input",
    "response": "output",
    "history": "history",
    "messages": "conversations",
    "system": "system",
    "chosen": "chosen",
    "rejected": "rejected",
}


class Format(ABC):
    """One source shape. Subclasses set the class attributes and implement parse/to_record."""

    name: ClassVar[str]
    stage: ClassVar[Stage]
    required_keys: ClassVar[tuple[str, ...]]
    optional_keys: ClassVar[tuple[str, ...]] = ()
    # Breaks ties in detection when a record carries the keys of several formats.
    priority: ClassVar[int] = 0
    # `columns` name -> this format's key (see apply_columns).
    column_targets: ClassVar[Mapping[str, str]] = LLAMAFACTORY_COLUMNS
    description: ClassVar[str] = ""

    @property
    def id(self) -> str:
        return f"{self.stage}:{self.name}"

    def matches(self, record: Mapping[str, Any]) -> bool:
        return all(key in record for key in self.required_keys)

    def require(self, record: Mapping[str, Any], key: str) -> Any:
        if key not in record:
            raise ExampleError(
                f"missing key {key!r} (format {self.stage} {self.name} needs "
                f"{', '.join(self.required_keys)}; the record has {', '.join(map(str, record)) or 'none'})",
                "missing_key",
            )
        if record[key] is None:
            raise ExampleError(f"{key!r} is null (format {self.stage} {self.name} needs it)", "missing_key")
        return record[key]

    def parse(self, record: Mapping[str, Any], location: Location) -> Example:
        """One record -> one example; raises :class:`ExampleError` for a record it cannot use."""
        # A missing key is the first thing to report: a record of another shape would otherwise
        # fail on whatever the parser happens to look at first.
        for key in self.required_keys:
            self.require(record, key)
        return self._parse(record, location)

    @abstractmethod
    def _parse(self, record: Mapping[str, Any], location: Location) -> Example: ...

    @abstractmethod
    def to_record(self, example: Example) -> dict[str, Any]: ...

    def __repr__(self) -> str:
        return f"<format {self.id}>"


def _is_chat(value: object) -> bool:
    return isinstance(_decode_cell(value), list | dict)


class PromptText(Format):
    name = "prompt-text"
    stage = "dpo"
    required_keys = ("prompt", "chosen", "rejected")
    optional_keys = ("system",)
    column_targets: ClassVar[Mapping[str, str]] = {
        "prompt": "prompt",
        "system": "system",
        "chosen": "chosen",
        "rejected": "rejected",
    }
    description = "TRL standard: prompt/chosen/rejected strings"

    def matches(self, record: Mapping[str, Any]) -> bool:
        return super().matches(record) and not _is_chat(record["prompt"])

    def _parse(self, record: Mapping[str, Any], location: Location) -> PreferenceExample:
        prompt = _string(self.require(record, "prompt"), "prompt")
        chosen = _string(self.require(record, "chosen"), "chosen")
        rejected = _string(self.require(record, "rejected"), "rejected")
        messages = _with_system([Message("user", prompt)], _optional_system(record))
        return PreferenceExample(tuple(messages), chosen, rejected, location)

    def to_record(self, example: Example) -> dict[str, Any]:
        _need(example, PreferenceExample, self)
        assert isinstance(example, PreferenceExample)
        system, turns = _split_system(example.prompt)
        if len(turns) != 1:
            raise ExampleError(
                f"{self.stage} {self.name} holds a single user turn (plus a system prompt); this prompt "
                f"has {len(turns)} turns -- use prompt-chat, sharegpt or alpaca",
                "unconvertible",
            )
        record: dict[str, Any] = {
            "prompt": turns[0].content,
            "chosen": example.chosen,
            "rejected": example.rejected,
        }
        if system is not None:
            record["system"] = system
        return record


class PromptChat(Format):
    name = "prompt-chat"
    stage = "dpo"
    required_keys = ("prompt", "chosen", "rejected")
    optional_keys = ("system",)
    column_targets = PromptText.column_targets
    description = "TRL conversational: prompt/chosen/rejected as role/content message lists"

    def matches(self, record: Mapping[str, Any]) -> bool:
        return Format.matches(self, record) and _is_chat(record["prompt"])

    def _parse(self, record: Mapping[str, Any], location: Location) -> PreferenceExample:
        raw = _decode_cell(self.require(record, "prompt"))
        if isinstance(raw, str):  # lenient: a plain-text prompt is one user turn
            prompt = [Message("user", raw)]
        elif isinstance(raw, dict):
            prompt = [_message(raw, "prompt")]
        else:
            prompt = _messages(raw, "prompt")
        prompt = _with_system(prompt, _optional_system(record))
        _check_prompt(prompt, "prompt")
        chosen = _reply(self.require(record, "chosen"), "chosen")
        rejected = _reply(self.require(record, "rejected"), "rejected")
        return PreferenceExample(tuple(prompt), chosen, rejected, location)

    def to_record(self, example: Example) -> dict[str, Any]:
        _need(example, PreferenceExample, self)
        assert isinstance(example, PreferenceExample)
        return {
            "prompt": [m.to_dict() for m in example.prompt],
            "chosen": [Message("assistant", example.chosen).to_dict()],
            "rejected": [Message("assistant", example.rejected).to_dict()],
        }


class ShareGPTPair(Format):
    name = "sharegpt-pair"
    stage = "dpo"
    required_keys = ("conversations", "rejected_conversations")
    optional_keys = ("system",)
    priority = 1  # `rejected_conversations` is unmistakable, whatever else the record holds
    description = "ShareGPT conversations + rejected_conversations, differing only in the last turn"

    def _parse(self, record: Mapping[str, Any], location: Location) -> PreferenceExample:
        good = _messages(self.require(record, "conversations"), "conversations")
        bad = _messages(self.require(record, "rejected_conversations"), "rejected_conversations")
        for key, conv in (("conversations", good), ("rejected_conversations", bad)):
            if not conv or conv[-1].role != "assistant":
                raise ExampleError(f"{key}: must end with an assistant turn", "bad_turns")
        for i in range(max(len(good), len(bad)) - 1):
            if i >= len(good) - 1 or i >= len(bad) - 1 or good[i] != bad[i]:
                raise ExampleError(
                    f"conversations[{i}] and rejected_conversations[{i}] differ; only the last turn "
                    "may differ between the two",
                    "bad_turns",
                )
        prompt = _with_system(good[:-1], _optional_system(record))
        _check_prompt(prompt, "conversations")
        return PreferenceExample(tuple(prompt), good[-1].content, bad[-1].content, location)

    def to_record(self, example: Example) -> dict[str, Any]:
        _need(example, PreferenceExample, self)
        assert isinstance(example, PreferenceExample)
        system, turns = _split_system(example.prompt)
        record: dict[str, Any] = {
            "conversations": _sharegpt_dicts([*turns, Message("assistant", example.chosen)]),
            "rejected_conversations": _sharegpt_dicts([*turns, Message("assistant", example.rejected)]),
        }
        if system is not None:
            record["system"] = system
        return record


class ShareGPTRanking(Format):
    name = "sharegpt"
    stage = "dpo"
    required_keys = ("conversations", "chosen", "rejected")
    optional_keys = ("system",)
    description = "LLaMA-Factory sharegpt ranking: conversations + chosen/rejected {from, value}"

    def _parse(self, record: Mapping[str, Any], location: Location) -> PreferenceExample:
        prompt = _with_system(
            _messages(self.require(record, "conversations"), "conversations"), _optional_system(record)
        )
        _check_prompt(prompt, "conversations")
        chosen = _reply(self.require(record, "chosen"), "chosen")
        rejected = _reply(self.require(record, "rejected"), "rejected")
        return PreferenceExample(tuple(prompt), chosen, rejected, location)

    def to_record(self, example: Example) -> dict[str, Any]:
        _need(example, PreferenceExample, self)
        assert isinstance(example, PreferenceExample)
        system, turns = _split_system(example.prompt)
        record: dict[str, Any] = {
            "conversations": _sharegpt_dicts(turns),
            "chosen": {"from": "gpt", "value": example.chosen},
            "rejected": {"from": "gpt", "value": example.rejected},
        }
        if system is not None:
            record["system"] = system
        return record


def _alpaca_prompt(fmt: Format, record: Mapping[str, Any]) -> list[Message]:
    instruction = _string(fmt.require(record, "instruction"), "instruction")
    query = record.get("input")
    query = "" if query is None else _string(query, "input")
    # As LLaMA-Factory does: the input goes on its own line after the instruction, if any.
    content = f"{instruction}\n{query}" if query else instruction
    return _with_system(
        [*_history(record.get("history")), Message("user", content)], _optional_system(record)
    )


def _alpaca_record(system: str | None, history: list[list[str]], instruction: str) -> dict[str, Any]:
    record: dict[str, Any] = {"instruction": instruction, "input": ""}
    if system is not None:
        record["system"] = system
    if history:
        record["history"] = history
    return record


class AlpacaRanking(Format):
    name = "alpaca"
    stage = "dpo"
    required_keys = ("instruction", "chosen", "rejected")
    optional_keys = ("input", "system", "history")
    description = "LLaMA-Factory alpaca ranking: instruction[/input] + chosen/rejected strings"

    def _parse(self, record: Mapping[str, Any], location: Location) -> PreferenceExample:
        prompt = _alpaca_prompt(self, record)
        chosen = _string(self.require(record, "chosen"), "chosen")
        rejected = _string(self.require(record, "rejected"), "rejected")
        return PreferenceExample(tuple(prompt), chosen, rejected, location)

    def to_record(self, example: Example) -> dict[str, Any]:
        _need(example, PreferenceExample, self)
        assert isinstance(example, PreferenceExample)
        record = _alpaca_record(*_split_alpaca(example.prompt, self))
        record.update(chosen=example.chosen, rejected=example.rejected)
        return record


class AlpacaSFT(Format):
    name = "alpaca"
    stage = "sft"
    required_keys = ("instruction", "output")
    optional_keys = ("input", "system", "history")
    description = "alpaca: instruction[/input] + output"

    def _parse(self, record: Mapping[str, Any], location: Location) -> SFTExample:
        prompt = _alpaca_prompt(self, record)
        output = _string(self.require(record, "output"), "output")
        return SFTExample((*prompt, Message("assistant", output)), location)

    def to_record(self, example: Example) -> dict[str, Any]:
        _need(example, SFTExample, self)
        assert isinstance(example, SFTExample)
        _check_sft(example.messages, "messages")
        record = _alpaca_record(*_split_alpaca(example.messages[:-1], self))
        record["output"] = example.messages[-1].content
        return record


class MessagesSFT(Format):
    name = "messages"
    stage = "sft"
    required_keys = ("messages",)
    optional_keys = ("system",)
    column_targets: ClassVar[Mapping[str, str]] = {"messages": "messages", "system": "system"}
    description = "OpenAI messages: role/content list, optional leading system message"

    def _parse(self, record: Mapping[str, Any], location: Location) -> SFTExample:
        messages = _with_system(
            _messages(self.require(record, "messages"), "messages"), _optional_system(record)
        )
        _check_sft(messages, "messages")
        return SFTExample(tuple(messages), location)

    def to_record(self, example: Example) -> dict[str, Any]:
        _need(example, SFTExample, self)
        assert isinstance(example, SFTExample)
        return {"messages": [m.to_dict() for m in example.messages]}


class ShareGPTSFT(Format):
    name = "sharegpt"
    stage = "sft"
    required_keys = ("conversations",)
    optional_keys = ("system",)
    description = "ShareGPT conversations (from/value; role/content also accepted) + optional system"

    def _parse(self, record: Mapping[str, Any], location: Location) -> SFTExample:
        messages = _with_system(
            _messages(self.require(record, "conversations"), "conversations"), _optional_system(record)
        )
        _check_sft(messages, "conversations")
        return SFTExample(tuple(messages), location)

    def to_record(self, example: Example) -> dict[str, Any]:
        _need(example, SFTExample, self)
        assert isinstance(example, SFTExample)
        system, turns = _split_system(example.messages)
        record: dict[str, Any] = {"conversations": _sharegpt_dicts(turns)}
        if system is not None:
            record["system"] = system
        return record


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


def _check_stage(stage: str | None) -> None:
    if stage is not None and stage not in STAGES:
        raise FormatError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")


def _format_list(candidates: Iterable[Format]) -> str:
    lines = []
    for fmt in candidates:
        optional = f" [{', '.join(fmt.optional_keys)}]" if fmt.optional_keys else ""
        lines.append(f"  {fmt.stage} {fmt.name}: {', '.join(fmt.required_keys)}{optional}")
    return "\n".join(lines)


def _detect(records: Iterable[object], candidates: list[Format], source: str | None) -> Format:
    sample = [r for r in records if isinstance(r, dict)][:50]
    where = f"{source}: " if source else ""
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
        seen: dict[str, None] = {}
        for record in sample:
            seen.update(dict.fromkeys(map(str, record)))
        elsewhere = [f.id for f in FORMATS if f not in candidates and any(f.matches(r) for r in sample)]
        hint = f" (they look like {' or '.join(elsewhere)}: is the stage right?)" if elsewhere else ""
        raise FormatError(
            f"{where}cannot tell the format: the records have keys {', '.join(seen)}{hint}; "
            f"the known formats and their keys are:\n{_format_list(candidates)}\n"
            "Rename the columns (columns=...) or force a format (format=...)."
        )
    return max(votes, key=lambda f: (votes[f], f.priority, len(f.required_keys)))


def detect_format(
    records: Iterable[object], stage: str | None = None, *, source: str | None = None
) -> Format:
    """The format of ``records`` (raw values; non-dicts are ignored), judged by their keys."""
    _check_stage(stage)
    return _detect(records, [f for f in FORMATS if stage is None or f.stage == stage], source)


def find_formats(name: str, stage: str | None) -> list[Format]:
    key = name.strip().lower().replace("_", "-")
    for sep in (":", "/"):
        if sep in key:  # "dpo:alpaca", "sft/sharegpt"
            prefix, key = key.split(sep, 1)
            if stage is not None and prefix != stage:
                raise FormatError(f"format {name!r} is for stage {prefix!r}, not {stage!r}")
            _check_stage(prefix)
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
    _check_stage(stage)
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


# --------------------------------------------------------------------------------- columns and tags

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
                value = _decode_cell(out[key])
                if isinstance(value, list):
                    out[key] = [retag(m) for m in value]
                elif isinstance(value, dict):
                    out[key] = retag(value)
    return out


# ---------------------------------------------------------------------------------- whole files


def _not_object(value: object) -> str:
    return f"expected a JSON object (a record with keys), got {_type_name(value)}"


def parse_file(
    path: str | os.PathLike[str],
    *,
    stage: str | None = None,
    format: str | Format | None = None,
    columns: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
    file_label: str | None = None,
) -> ParsedFile:
    """Read ``path``, detect (or force) its format, and parse every record.

    Every record that cannot be used becomes a :class:`Problem` at its line/row; the rest become
    examples. Raises (``DataFileError``/``FormatError``) only for whole-file failures: unreadable
    file, unknown format name, or records whose format cannot be told.
    """
    _check_stage(stage)
    raw = read_records(path, file_label=file_label)
    label = file_label if file_label is not None else str(path)
    result = ParsedFile(path=str(path), format=None, problems=list(raw.problems), records=raw.total)

    forced: Format | None = None
    candidates: list[Format] = []
    if format is not None:
        candidates = [format] if isinstance(format, Format) else find_formats(format, stage)
        if not candidates:
            get_format(format, stage)  # raises with the did-you-mean message
        if len(candidates) == 1:
            forced = candidates[0]

    mapped = [
        (loc, apply_columns(rec, columns, tags, format=forced) if isinstance(rec, dict) else rec)
        for loc, rec in raw.records
    ]
    dicts = [rec for _, rec in mapped if isinstance(rec, dict)]
    fmt: Format | None = forced
    if fmt is None and dicts:
        # "alpaca" with no stage: the records say which of the two it is.
        pool = candidates or [f for f in FORMATS if stage is None or f.stage == stage]
        fmt = _detect(dicts, pool, label)
    if fmt is not None:
        result.format, result.stage = fmt.name, fmt.stage

    for loc, rec in mapped:
        if not isinstance(rec, dict):
            result.problems.append(Problem(loc, _not_object(rec), kind="not_object"))
            continue
        assert fmt is not None
        try:
            result.examples.append(fmt.parse(rec, loc))
        except ExampleError as exc:
            result.problems.append(Problem(loc, str(exc), kind=exc.kind))
    # Reader problems and parse problems interleave by position, as a user reads the file.
    result.problems.sort(key=lambda p: (p.location.line or 0, p.location.row or 0))
    return result


def write_examples(
    examples: Iterable[Example],
    path: str | os.PathLike[str],
    format: str | Format,
    *,
    stage: str | None = None,
) -> int:
    """Write ``examples`` in ``format`` to ``path`` (.jsonl/.json/.parquet/.csv by extension).

    Raises :class:`FormatError` naming the example's location if one cannot be expressed in the
    format (a multi-turn prompt as prompt-text), and ``DataFileError`` for CSV when a field is not
    text. Nothing is written in either case. Returns how many examples were written.
    """
    examples = list(examples)
    if isinstance(format, str) and stage is None and len(find_formats(format, None)) > 1 and examples:
        # "alpaca"/"sharegpt" exist for both stages: the examples themselves say which is meant.
        stage = "dpo" if isinstance(examples[0], PreferenceExample) else "sft"
    fmt = get_format(format, stage)
    records = []
    for example in examples:
        try:
            records.append(fmt.to_record(example))
        except ExampleError as exc:
            raise FormatError(f"{example.location}: cannot write as {fmt.id}: {exc}") from exc
    write_records(records, Path(path))
    return len(records)
