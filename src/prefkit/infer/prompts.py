"""A file of prompts for `prefkit generate`, read record by record.

Input: one record per line (JSONL; also JSON, CSV, Parquet through the data readers), each one of

* ``{"prompt": "text"}`` or ``{"prompt": [messages]}``, optionally with ``"system"``;
* ``{"messages": [...]}`` -- trailing assistant turns (a reference reply) are left out of the prompt;
* any preference or SFT record prefkit trains on (prompt/chosen/rejected, ShareGPT, alpaca): its
  prompt is used.

A record's ``id``, when it has one, is copied to its result.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prefkit.data.examples import ExampleError, Location, Message, PreferenceExample, Problem, SFTExample
from prefkit.data.formats import FormatError, detect_format
from prefkit.data.formats.fields import check_prompt, optional_system, read_messages, type_name, with_system
from prefkit.data.readers import read_records


@dataclass(frozen=True)
class PromptItem:
    location: Location
    messages: list[Message]
    record_id: Any = None

    @property
    def key(self) -> str:
        return f"line {self.location.line}" if self.location.line is not None else f"row {self.location.row}"

    def place(self) -> dict[str, int]:
        return (
            {"line": self.location.line}
            if self.location.line is not None
            else {"row": self.location.row or 0}
        )


def _prompt_of(record: Mapping[str, Any], location: Location) -> list[Message]:
    if "prompt" in record and "chosen" not in record and "rejected" not in record:
        value = record["prompt"]
        if not isinstance(value, str | list):
            raise ExampleError(
                f"prompt: expected text or a list of messages, got {type_name(value)}", "wrong_type"
            )
        messages = [Message("user", value)] if isinstance(value, str) else read_messages(value, "prompt")
        messages = with_system(messages, optional_system(record))
    elif "messages" in record:
        messages = read_messages(record["messages"], "messages")
        while messages and messages[-1].role == "assistant":
            messages.pop()  # a reference reply, not part of the prompt
        messages = with_system(messages, optional_system(record))
    else:
        try:
            fmt = detect_format([record])
        except FormatError:
            keys = ", ".join(map(str, record)) or "none"
            raise ExampleError(
                f"no prompt found: expected 'prompt' (text or messages), 'messages', or a preference/SFT "
                f"record; the record has keys {keys}",
                "missing_key",
            ) from None
        example = fmt.parse(record, location)
        if isinstance(example, PreferenceExample):
            messages = list(example.prompt)
        else:
            assert isinstance(example, SFTExample)
            messages = list(example.messages)
            while messages and messages[-1].role == "assistant":
                messages.pop()
    check_prompt(messages, "prompt")
    return messages


def read_prompts(path: str | os.PathLike[str]) -> tuple[list[PromptItem], list[Problem]]:
    """Every usable prompt of ``path`` and a problem (``file:line: what``) for each record that is not."""
    raw = read_records(path)
    items: list[PromptItem] = []
    problems = list(raw.problems)
    for location, record in raw.records:
        if not isinstance(record, dict):
            problems.append(Problem(location, "expected a JSON object with a prompt", kind="not_object"))
            continue
        try:
            items.append(PromptItem(location, _prompt_of(record, location), record.get("id")))
        except (ExampleError, FormatError) as err:
            problems.append(Problem(location, str(err), kind=getattr(err, "kind", "invalid")))
    problems.sort(key=lambda p: (p.location.line or 0, p.location.row or 0))
    return items, problems
