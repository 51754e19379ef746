"""Replies from anywhere: a file of prompts and the replies some system gave them (prefkit generate, vLLM,
an API, a person), matched to held-out preference pairs so `prefkit eval --replies` can score them with
the same scorers and guards as a model's own replies, without generating.

A record (JSONL, or JSON/CSV/Parquet through the data readers) is one of

* ``{"prompt": text | [messages], "reply": text}`` -- ``response`` or ``completion`` for ``reply`` too;
  an optional ``system``;
* ``{"messages": [..., {"role": "assistant", "content": reply}]}`` -- the last assistant turn is the
  reply (OpenAI's chat format); ``{"messages": [...], "reply": text}`` -- what ``prefkit generate`` writes;
* ``{"instruction": ..., "input": ..., "output": reply}`` -- alpaca (alpaca-eval's output files).

A reply's ``finish_reason`` (``prefkit generate`` and OpenAI write it) is read where present: a reply cut
off at ``length`` is not called short by the length guard.

Each record is matched to the held-out pair with the same prompt (the whole conversation; else the last
user message, where only one pair has it). A record whose prompt is in no pair, two replies to one pair,
or a record without a prompt or a reply is an error naming its file and line; held-out pairs without a
reply are left out of the scores and counted in the report.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prefkit.data.examples import ExampleError, Location, Message, PreferenceExample, Problem
from prefkit.data.formats.fields import optional_system, read_messages, read_string, type_name, with_system
from prefkit.data.readers import read_records
from prefkit.errors import PrefkitError
from prefkit.evaluate.scorers import Sample
from prefkit.evaluate.text import normalise

REPLY_KEYS = ("reply", "response", "completion")


class RepliesError(PrefkitError):
    """A replies file that cannot be scored as given."""


@dataclass(frozen=True)
class GivenReply:
    location: Location
    prompt: tuple[Message, ...]
    reply: str
    finish_reason: str | None = None


def _reply_key(record: Mapping[str, Any]) -> str | None:
    found = [k for k in REPLY_KEYS if k in record]
    if len(found) > 1:
        raise ExampleError(f"holds both {found[0]!r} and {found[1]!r}: give the reply once")
    return found[0] if found else None


def parse_reply(record: Mapping[str, Any], location: Location) -> GivenReply:
    key = _reply_key(record)
    if key is not None:
        reply = read_string(record[key], key)
        if "prompt" in record:
            value = record["prompt"]
            if not isinstance(value, str | list):
                raise ExampleError(f"prompt: expected text or a list of messages, got {type_name(value)}")
            prompt = [Message("user", value)] if isinstance(value, str) else read_messages(value, "prompt")
        elif "messages" in record:
            prompt = read_messages(record["messages"], "messages")
            if prompt and prompt[-1].role == "assistant":
                raise ExampleError(f"messages ends with an assistant turn and {key!r} gives a reply too")
        else:
            raise ExampleError(f"{key!r} needs the prompt it answers: a 'prompt' or 'messages' key")
    elif "messages" in record:
        messages = read_messages(record["messages"], "messages")
        if not messages or messages[-1].role != "assistant":
            raise ExampleError("no reply: expected the last message to be the assistant's, or a 'reply' key")
        *prompt, last = messages
        reply = last.content
    elif "instruction" in record and "output" in record:
        instruction = read_string(record["instruction"], "instruction")
        extra = read_string(record.get("input") or "", "input")
        prompt = [Message("user", f"{instruction}\n{extra}" if extra else instruction)]
        reply = read_string(record["output"], "output")
    else:
        keys = ", ".join(map(str, record)) or "none"
        raise ExampleError(
            f"expected a prompt and a reply ('prompt' + 'reply', 'messages' ending with the assistant's "
            f"turn, or alpaca 'instruction' + 'output'); the record has keys {keys}"
        )
    prompt = with_system(list(prompt), optional_system(record))
    if not any(m.role == "user" for m in prompt):
        raise ExampleError("the prompt has no user message")
    reason = record.get("finish_reason")
    return GivenReply(location, tuple(prompt), reply, reason if isinstance(reason, str) else None)


def read_replies(path: str | os.PathLike[str]) -> list[GivenReply]:
    """Every record of ``path`` as a reply; any record that is not one is an error naming its line."""
    raw = read_records(path)
    problems = list(raw.problems)
    replies = []
    for location, record in raw.records:
        if not isinstance(record, dict):
            problems.append(Problem(location, "expected a JSON object with a prompt and a reply"))
            continue
        try:
            replies.append(parse_reply(record, location))
        except ExampleError as err:
            problems.append(Problem(location, str(err)))
    if problems:
        raise RepliesError(_listed(f"{path}: {len(problems)} records cannot be scored", problems))
    if not replies:
        raise RepliesError(f"{path}: no replies in the file")
    return replies


def _listed(head: str, problems: Sequence[Problem], limit: int = 50) -> str:
    lines = [f"  {p}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return head + ":\n" + "\n".join(lines)


def _conversation(messages: Sequence[Message]) -> tuple[tuple[str, str], ...]:
    return tuple((m.role, " ".join(normalise(m.content).split())) for m in messages)


def _last_user(messages: Sequence[Message]) -> str:
    return next(" ".join(normalise(m.content).split()) for m in reversed(messages) if m.role == "user")


def match_replies(
    replies: Sequence[GivenReply], pairs: Sequence[PreferenceExample]
) -> list[tuple[PreferenceExample, GivenReply]]:
    """Each reply with its held-out pair, in the pairs' order (see the module docstring)."""
    by_conversation: dict[Any, int] = {}
    by_last: dict[str, list[int]] = {}
    for i, pair in enumerate(pairs):
        by_conversation.setdefault(_conversation(pair.prompt), i)
        by_last.setdefault(_last_user(pair.prompt), []).append(i)
    matched: dict[int, GivenReply] = {}
    problems = []
    for given in replies:
        index = by_conversation.get(_conversation(given.prompt))
        if index is None:
            candidates = by_last.get(_last_user(given.prompt), [])
            index = candidates[0] if len(candidates) == 1 else None
        if index is None:
            problems.append(Problem(given.location, "no held-out pair has this prompt"))
        elif index in matched:
            first = matched[index].location
            problems.append(Problem(given.location, f"a second reply to the prompt answered at {first}"))
        else:
            matched[index] = given
    if problems:
        raise RepliesError(_listed(f"{len(problems)} replies do not match the held-out pairs", problems))
    return [(pairs[i], matched[i]) for i in sorted(matched)]


def given_samples(matched: Sequence[tuple[PreferenceExample, GivenReply]]) -> list[Sample]:
    """Unscored samples of matched replies, as :func:`prefkit.evaluate.generate_samples` makes them."""
    return [
        Sample(
            prompt=pair.prompt[-1].content,
            reply=given.reply.strip(),
            chosen=pair.chosen,
            rejected=pair.rejected,
            truncated=given.finish_reason == "length",
        )
        for pair, given in matched
    ]
