"""SFT shapes: alpaca, OpenAI messages, ShareGPT conversations."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from prefkit.data.examples import (
    Example,
    Location,
    Message,
    SFTExample,
)
from prefkit.data.formats.base import Format
from prefkit.data.formats.fields import (
    alpaca_prompt,
    alpaca_record,
    check_first_turn,
    check_sft,
    need,
    optional_system,
    read_messages,
    read_string,
    sharegpt_dicts,
    split_alpaca,
    split_system,
    with_system,
)


class AlpacaSFT(Format):
    name = "alpaca"
    stage = "sft"
    required_keys = ("instruction", "output")
    optional_keys = ("input", "system", "history")
    description = "alpaca: instruction[/input] + output"

    def _parse(self, record: Mapping[str, Any], location: Location) -> SFTExample:
        prompt = alpaca_prompt(self, record)
        output = read_string(self.require(record, "output"), "output")
        return SFTExample((*prompt, Message("assistant", output)), location)

    def to_record(self, example: Example) -> dict[str, Any]:
        need(example, SFTExample, self)
        assert isinstance(example, SFTExample)
        check_sft(example.messages, "messages")
        record = alpaca_record(*split_alpaca(example.messages[:-1], self))
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
        turns = read_messages(self.require(record, "messages"), "messages")
        messages = with_system(turns, optional_system(record))
        check_sft(messages, "messages")
        check_first_turn(turns, "messages")
        return SFTExample(tuple(messages), location)

    def to_record(self, example: Example) -> dict[str, Any]:
        need(example, SFTExample, self)
        assert isinstance(example, SFTExample)
        return {"messages": [m.to_dict() for m in example.messages]}


class ShareGPTSFT(Format):
    name = "sharegpt"
    stage = "sft"
    required_keys = ("conversations",)
    optional_keys = ("system",)
    description = "ShareGPT conversations (from/value; role/content also accepted) + optional system"

    def _parse(self, record: Mapping[str, Any], location: Location) -> SFTExample:
        turns = read_messages(self.require(record, "conversations"), "conversations")
        messages = with_system(turns, optional_system(record))
        check_sft(messages, "conversations")
        check_first_turn(turns, "conversations")
        return SFTExample(tuple(messages), location)

    def to_record(self, example: Example) -> dict[str, Any]:
        need(example, SFTExample, self)
        assert isinstance(example, SFTExample)
        system, turns = split_system(example.messages)
        record: dict[str, Any] = {"conversations": sharegpt_dicts(turns)}
        if system is not None:
            record["system"] = system
        return record
