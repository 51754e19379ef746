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

Each record is matched to a held-out pair with the same prompt: the whole conversation, compared after
NFKC normalisation with runs of whitespace as one space; else, for a record whose prompt is a single user
message, the pair whose last user message it is, where only one conversation has it. Where several pairs
share a prompt, the replies to it answer them in order. A record whose prompt is in no pair, more replies
to a prompt than pairs have it, or a record without a prompt or a reply is an error naming its file and
line. Pairs without a reply are counted, and fail the evaluation's coverage check (``prefkit eval``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefkit.data.examples import ExampleError, Location, Message, PreferenceExample, Problem
from prefkit.data.formats.fields import optional_system, read_messages, read_string, type_name, with_system
from prefkit.data.readers import read_records
from prefkit.errors import PrefkitError
from prefkit.score.scorers import Sample
from prefkit.score.text import normalise

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
            if isinstance(value, str):
                prompt = [Message("user", read_string(value, "prompt"))]
            else:
                prompt = read_messages(value, "prompt")
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


def _text(content: str) -> str:
    return " ".join(normalise(content).split())


def _conversation(messages: Sequence[Message]) -> tuple[tuple[str, str], ...]:
    return tuple((m.role, _text(m.content)) for m in messages)


def _single_question(messages: Sequence[Message]) -> str | None:
    """The text of a prompt that is one user message (after an optional system message), else None."""
    turns = [m for m in messages if m.role != "system"]
    return _text(turns[0].content) if len(turns) == 1 and turns[0].role == "user" else None


def match_replies(replies: Sequence[GivenReply], pairs: Sequence[PreferenceExample]) -> dict[int, GivenReply]:
    """The index of the pair each reply answers (see the module docstring); an error names every reply
    that answers none."""
    by_conversation: dict[Any, list[int]] = {}
    for i, pair in enumerate(pairs):
        by_conversation.setdefault(_conversation(pair.prompt), []).append(i)
    by_question: dict[str, set[Any]] = {}
    for key in by_conversation:
        question = _single_question([Message(role, content) for role, content in key])
        if question is not None:
            by_question.setdefault(question, set()).add(key)
    matched: dict[int, GivenReply] = {}
    problems = []
    for given in replies:
        key = _conversation(given.prompt)
        if key not in by_conversation and (question := _single_question(given.prompt)) is not None:
            found = by_question.get(question, set())
            key = next(iter(found)) if len(found) == 1 else key
        indices = by_conversation.get(key)
        if indices is None:
            problems.append(Problem(given.location, "no held-out pair has this prompt"))
            continue
        free = [i for i in indices if i not in matched]
        if not free:
            first = matched[indices[0]].location
            more = f"{len(indices)} held-out pairs have" if len(indices) > 1 else "one held-out pair has"
            problems.append(
                Problem(given.location, f"one reply too many to the prompt answered at {first} ({more} it)")
            )
            continue
        matched[free[0]] = given
    if problems:
        raise RepliesError(_listed(f"{len(problems)} replies do not match the held-out pairs", problems))
    return matched


def _samples(matched: Sequence[tuple[PreferenceExample, GivenReply]]) -> list[Sample]:
    """Unscored samples of replies with their pairs, as :func:`prefkit.evaluate.generate_samples` makes
    them."""
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


def _given(
    replies: list[GivenReply] | None, pairs: list[PreferenceExample], evaluated: int
) -> tuple[list[Sample] | None, int]:
    """Given replies matched to the pairs, in the pairs' order, those to the first ``evaluated`` pairs
    only; and how many answered pairs beyond them (``--max-samples``, ``--generate``) were left out."""
    if replies is None:
        return None, 0
    matched = match_replies(replies, pairs)
    kept = sorted(i for i in matched if i < evaluated)
    return _samples([(pairs[i], matched[i]) for i in kept]), len(matched) - len(kept)


def given_sides(
    read: dict[Any, list[GivenReply]],
    replies: str | Path | None,
    baseline_replies: str | Path | None,
    pairs: list[PreferenceExample],
    evaluated: int,
) -> tuple[list[Sample] | None, list[Sample] | None, int]:
    """Both files' replies matched to the pairs (:func:`_given`), which must answer the same prompts,
    and how many of the model's were left out."""
    given, left_out = _given(read.get(replies), pairs, evaluated)
    given_baseline, _ = _given(read.get(baseline_replies), pairs, evaluated)
    if given_baseline is not None and [s.prompt for s in given or []] != [s.prompt for s in given_baseline]:
        raise PrefkitError(
            f"{replies} and {baseline_replies} answer different prompts of the held-out data: give both "
            "sides replies to the same prompts"
        )
    return given, given_baseline, left_out
