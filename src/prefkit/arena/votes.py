"""The arena's votes file, ``RUNS_DIR/arena/votes.jsonl``: one JSON object a line, appended and never
rewritten.

A line::

    {"id": "battle id", "time": 1765000000.0,
     "prompt": [{"role": "user", "content": "..."}],
     "a": {"model": "base", "reply": "...", "finish_reason": "stop", "settings": {...}},
     "b": {"model": "dpo", "reply": "...", "finish_reason": "length", "settings": {...}},
     "winner": "a" | "b" | "tie" | "both_bad", "voter": "name" | null, "prompt_index": 3 | null}

``a`` is the reply shown on the left, ``b`` the one on the right; ``settings`` are the sampling settings
the reply was generated with (the same for both sides of a battle). ``time`` is seconds since the epoch.
``prompt_index`` is the prompt's place in the server's ``--prompts`` file when it was drawn from there
and sent unchanged, else null (typed, or edited).

**Nothing is lost.** A vote is written with one ``write`` of the whole line under a file lock (several
servers may share a runs directory), then ``fsync``-ed before the voter is told it counted. A crash in
the middle of a write can leave a torn last line; the next append first ends it with a newline, so the
torn fragment stays a line of its own and the new vote is whole; a write that fails is cut back out
before the voter hears it was not counted. Reading reports a torn line (``file:line``) and skips it, and
keeps only the first vote of a battle that appears twice. A line that is whole JSON but not a vote
(someone edited the file) is an error naming the line and the key, as every other file prefkit reads.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from prefkit.data.examples import ROLES, Message
from prefkit.errors import PrefkitError

VOTES_FILE = Path("arena") / "votes.jsonl"
Winner = Literal["a", "b", "tie", "both_bad"]
WINNERS: tuple[Winner, ...] = get_args(Winner)
MAX_VOTER = 100  # characters of a voter's name
LOCK_TIMEOUT = 10.0  # seconds a vote waits for another writer


class VotesError(PrefkitError):
    """A votes file that cannot be read, or a line in it that is not a vote."""


class VotesLocked(OSError):
    """Another process has held the votes file's lock for too long."""


@dataclass(frozen=True)
class Side:
    """One model's reply in a battle."""

    model: str
    reply: str
    settings: dict[str, Any] = field(default_factory=dict)
    finish_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "reply": self.reply,
            "finish_reason": self.finish_reason,
            "settings": self.settings,
        }


@dataclass(frozen=True)
class Vote:
    id: str
    time: float
    prompt: tuple[Message, ...]
    a: Side
    b: Side
    winner: Winner
    voter: str | None = None
    prompt_index: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": self.time,
            "prompt": [m.to_dict() for m in self.prompt],
            "a": self.a.to_dict(),
            "b": self.b.to_dict(),
            "winner": self.winner,
            "voter": self.voter,
            "prompt_index": self.prompt_index,
        }

    @property
    def models(self) -> tuple[str, str]:
        return self.a.model, self.b.model

    @property
    def decisive(self) -> bool:
        return self.winner in ("a", "b")


@dataclass(frozen=True)
class SkippedLine:
    line: int
    reason: str


@dataclass(frozen=True)
class VotesRead:
    path: Path
    votes: list[Vote]
    lines: list[int]  # each vote's line in the file
    skipped: list[SkippedLine]  # torn or unreadable lines, reported and left out

    def warnings(self) -> list[str]:
        return [f"{self.path}:{s.line}: skipped: {s.reason}" for s in self.skipped]


def votes_path(runs_dir: str | os.PathLike[str]) -> Path:
    return Path(runs_dir) / VOTES_FILE


def append_vote(path: Path, vote: Vote, *, lock_timeout: float = LOCK_TIMEOUT) -> None:
    """Append ``vote`` as one line and ``fsync`` it; returns once the vote is on disk. On any failure the
    file is cut back to what it held, so a vote the caller reports as not counted is not in it (and a
    retry does not count it twice). A lock held elsewhere for ``lock_timeout`` seconds: VotesLocked."""
    from filelock import FileLock, Timeout

    line = json.dumps(vote.to_dict(), ensure_ascii=False, allow_nan=False).encode() + b"\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(path) + ".lock", timeout=lock_timeout):
            _append(path, line)
    except Timeout:
        raise VotesLocked(
            f"{path} is locked by another process ({path}.lock) for over {lock_timeout:g} s"
        ) from None


def _append(path: Path, line: bytes) -> None:
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if created:
            _fsync_dir(path.parent)  # the new file's name is on disk before any vote is in it
        size = os.fstat(fd).st_size
        if size and _last_byte(path, size) != b"\n":
            line = b"\n" + line  # end a torn line left by a crash, so this vote is a line of its own
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"wrote {written} of {len(line)} bytes")
            os.fsync(fd)
        except BaseException:
            os.ftruncate(fd, size)  # not counted means not in the file
            raise
    finally:
        os.close(fd)


def _last_byte(path: Path, size: int) -> bytes:
    with path.open("rb") as f:
        f.seek(size - 1)
        return f.read(1)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_votes(path: str | os.PathLike[str]) -> VotesRead:
    """Every vote in the file, in order; torn lines skipped and listed. A missing file has no votes."""
    path = Path(path)
    if path.is_dir():
        raise VotesError(f"{path} is a folder; expected the arena's votes file (JSON Lines)")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return VotesRead(path, [], [], [])
    except OSError as err:
        raise VotesError(f"cannot read {path}: {err.strerror or err}") from None
    votes: list[Vote] = []
    lines: list[int] = []
    skipped: list[SkippedLine] = []
    seen: dict[str, int] = {}
    lines_of = data.split(b"\n")
    last = len(lines_of)
    for number, raw in enumerate(lines_of, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            if number == last and not data.endswith(b"\n"):
                skipped.append(
                    SkippedLine(number, "the last line is incomplete (being written, or cut short)")
                )
                continue
            skipped.append(
                SkippedLine(number, f"not a whole JSON line (a write cut short by a crash?): {err}")
            )
            continue
        vote = parse_vote(record, f"{path}:{number}")
        if vote.id in seen:  # a copy of a line (an edit, two files joined): the first one counts
            skipped.append(
                SkippedLine(number, f"battle {vote.id} was voted on at line {seen[vote.id]} already")
            )
            continue
        seen[vote.id] = number
        votes.append(vote)
        lines.append(number)
    return VotesRead(path, votes, lines, skipped)


def parse_vote(record: Any, where: str) -> Vote:
    """A vote from its JSON object; a VotesError naming ``where`` and the key otherwise."""

    def bad(key: str, expected: str, value: Any = None) -> VotesError:
        got = "" if value is None else f", got {json.dumps(value, ensure_ascii=False)[:80]}"
        return VotesError(f"{where}: {key}: expected {expected}{got}")

    if not isinstance(record, Mapping):
        raise bad("(line)", "a JSON object (a vote)")
    for key in ("id", "prompt", "a", "b", "winner"):
        if key not in record:
            raise VotesError(
                f"{where}: missing key '{key}' (a vote has id, time, prompt, a, b, winner, voter)"
            )
    if not isinstance(record["id"], str):
        raise bad("id", "a string", record["id"])
    stamp = record.get("time", 0.0)
    if not isinstance(stamp, int | float) or isinstance(stamp, bool) or not math.isfinite(stamp):
        raise bad("time", "seconds since the epoch (a number)", stamp)
    winner = record["winner"]
    if winner not in WINNERS:
        raise bad("winner", " | ".join(f'"{w}"' for w in WINNERS), winner)
    voter = record.get("voter")
    if voter is not None and not isinstance(voter, str):
        raise bad("voter", "a string or null", voter)
    index = record.get("prompt_index")
    if index is not None and (not isinstance(index, int) or isinstance(index, bool) or index < 0):
        raise bad("prompt_index", "a place in the prompts file (an integer >= 0) or null", index)
    prompt = record["prompt"]
    if not isinstance(prompt, list) or not prompt:
        raise bad("prompt", "a non-empty list of messages", prompt)
    messages = []
    for i, m in enumerate(prompt):
        if not (isinstance(m, Mapping) and m.get("role") in ROLES and isinstance(m.get("content"), str)):
            raise bad(
                f"prompt[{i}]", 'a message {"role": "system" | "user" | "assistant", "content": "text"}', m
            )
        messages.append(Message(m["role"], m["content"]))
    return Vote(
        record["id"],
        float(stamp),
        tuple(messages),
        _side(record["a"], "a", bad),
        _side(record["b"], "b", bad),
        winner,
        voter,
        index,
    )


def _side(value: Any, key: str, bad: Any) -> Side:
    if not isinstance(value, Mapping):
        raise bad(key, '{"model", "reply", "settings"}', value)
    model, reply = value.get("model"), value.get("reply")
    if not isinstance(model, str) or not model:
        raise bad(f"{key}.model", "the model's name (a non-empty string)", model)
    if not isinstance(reply, str):
        raise bad(f"{key}.reply", "the reply's text (a string)", reply)
    settings = value.get("settings", {})
    if not isinstance(settings, Mapping):
        raise bad(f"{key}.settings", "an object", settings)
    finish = value.get("finish_reason")
    if finish is not None and not isinstance(finish, str):
        raise bad(f"{key}.finish_reason", "a string or null", finish)
    return Side(model, reply, dict(settings), finish)


def now() -> float:
    return round(time.time(), 3)
