"""Preference-pair shapes: prompt/chosen/rejected as text or chat, ShareGPT pairs and rankings, alpaca
rankings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from prefkit.data.examples import (
    Example,
    ExampleError,
    Location,
    Message,
    PreferenceExample,
)
from prefkit.data.formats.base import Format, is_chat
from prefkit.data.formats.fields import (
    alpaca_prompt,
    alpaca_record,
    check_first_turn,
    check_prompt,
    decode_cell,
    need,
    optional_system,
    read_message,
    read_messages,
    read_reply,
    read_string,
    sharegpt_dicts,
    split_alpaca,
    split_system,
    with_system,
)


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
        return super().matches(record) and not is_chat(record["prompt"])

    def _parse(self, record: Mapping[str, Any], location: Location) -> PreferenceExample:
        prompt = read_string(self.require(record, "prompt"), "prompt")
        chosen = read_string(self.require(record, "chosen"), "chosen")
        rejected = read_string(self.require(record, "rejected"), "rejected")
        messages = with_system([Message("user", prompt)], optional_system(record))
        return PreferenceExample(tuple(messages), chosen, rejected, location)

    def to_record(self, example: Example) -> dict[str, Any]:
        need(example, PreferenceExample, self)
        assert isinstance(example, PreferenceExample)
        system, turns = split_system(example.prompt)
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
        return Format.matches(self, record) and is_chat(record["prompt"])

    def _parse(self, record: Mapping[str, Any], location: Location) -> PreferenceExample:
        raw = decode_cell(self.require(record, "prompt"))
        if isinstance(raw, str):  # lenient: a plain-text prompt is one user turn
            turns = [Message("user", read_string(raw, "prompt"))]
        elif isinstance(raw, dict):
            turns = [read_message(raw, "prompt")]
        else:
            turns = read_messages(raw, "prompt")
        prompt = with_system(turns, optional_system(record))
        check_prompt(prompt, "prompt")
        check_first_turn(turns, "prompt")
        chosen = read_reply(self.require(record, "chosen"), "chosen")
        rejected = read_reply(self.require(record, "rejected"), "rejected")
        return PreferenceExample(tuple(prompt), chosen, rejected, location)

    def to_record(self, example: Example) -> dict[str, Any]:
        need(example, PreferenceExample, self)
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
        good = read_messages(self.require(record, "conversations"), "conversations")
        bad = read_messages(self.require(record, "rejected_conversations"), "rejected_conversations")
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
        prompt = with_system(good[:-1], optional_system(record))
        check_prompt(prompt, "conversations")
        check_first_turn(good, "conversations")
        return PreferenceExample(tuple(prompt), good[-1].content, bad[-1].content, location)

    def to_record(self, example: Example) -> dict[str, Any]:
        need(example, PreferenceExample, self)
        assert isinstance(example, PreferenceExample)
        system, turns = split_system(example.prompt)
        record: dict[str, Any] = {
            "conversations": sharegpt_dicts([*turns, Message("assistant", example.chosen)]),
            "rejected_conversations": sharegpt_dicts([*turns, Message("assistant", example.rejected)]),
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
        turns = read_messages(self.require(record, "conversations"), "conversations")
        prompt = with_system(turns, optional_system(record))
        check_prompt(prompt, "conversations")
        check_first_turn(turns, "conversations")
        chosen = read_reply(self.require(record, "chosen"), "chosen")
        rejected = read_reply(self.require(record, "rejected"), "rejected")
        return PreferenceExample(tuple(prompt), chosen, rejected, location)

    def to_record(self, example: Example) -> dict[str, Any]:
        need(example, PreferenceExample, self)
        assert isinstance(example, PreferenceExample)
        system, turns = split_system(example.prompt)
        record: dict[str, Any] = {
            "conversations": sharegpt_dicts(turns),
            "chosen": {"from": "gpt", "value": example.chosen},
            "rejected": {"from": "gpt", "value": example.rejected},
        }
        if system is not None:
            record["system"] = system
        return record


class AlpacaRanking(Format):
    name = "alpaca"
    stage = "dpo"
    required_keys = ("instruction", "chosen", "rejected")
    optional_keys = ("input", "system", "history")
    description = "LLaMA-Factory alpaca ranking: instruction[/input] + chosen/rejected strings"

    def _parse(self, record: Mapping[str, Any], location: Location) -> PreferenceExample:
        prompt = alpaca_prompt(self, record)
        chosen = read_string(self.require(record, "chosen"), "chosen")
        rejected = read_string(self.require(record, "rejected"), "rejected")
        return PreferenceExample(tuple(prompt), chosen, rejected, location)

    def to_record(self, example: Example) -> dict[str, Any]:
        need(example, PreferenceExample, self)
        assert isinstance(example, PreferenceExample)
        record = alpaca_record(*split_alpaca(example.prompt, self))
        record.update(chosen=example.chosen, rejected=example.rejected)
        return record
