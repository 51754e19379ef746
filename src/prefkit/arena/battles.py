"""The battles a server has open: which two models answer a prompt, in which order, and the vote that
closes each.

**Pairs.** Every battle goes to the pair of models with the fewest votes so far (the votes file's, and
battles still open), a random one among equals, in a random order: every pair gets votes, and neither
model sits on one side more than chance puts it there. With three models or more, a small study covers
every pair rather than the first one drawn.

**Life of a battle.** ``generating`` while the replies are being written; ``ready`` once both are;
``voting`` while its vote is being written; ``voted`` once the vote is on disk (one vote per battle; the
names are told only then); ``failed`` if a reply could not be generated (it cannot be voted on). Battles
live in memory: a battle nobody votes on is forgotten after ``ttl`` seconds. When ``max_open`` are open,
room is made by forgetting voted battles, then unvoted ones older than ``GRACE`` (oldest first); a
battle younger than that is never forgotten for room -- a client opening battles by the thousand gets
429s, it cannot take other voters' battles away. An open battle counts as load on its pair for pairing
only while younger than ``GRACE``, so abandoned battles do not hold their pair back for hours. Votes are
what is kept (:mod:`prefkit.arena.votes`).
"""

from __future__ import annotations

import itertools
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from prefkit.arena.votes import Side, Vote, Winner, now
from prefkit.data.examples import Message
from prefkit.errors import PrefkitError

State = Literal["generating", "ready", "voting", "voted", "failed"]
SIDES = ("a", "b")
MAX_OPEN = 1000
TTL = 6 * 3600.0  # seconds a battle waits for its vote
GRACE = 15 * 60.0  # seconds a battle is safe from being forgotten to make room, and counts as load


class BattleError(PrefkitError):
    """A battle that cannot be opened or voted on; ``status`` and ``code`` are the HTTP answer's."""

    def __init__(self, message: str, status: int, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass
class Battle:
    id: str
    prompt: tuple[Message, ...]
    models: dict[str, str]  # side -> model name
    created: float = field(default_factory=time.monotonic)
    replies: dict[str, str] = field(default_factory=lambda: dict.fromkeys(SIDES, ""))
    finish: dict[str, str | None] = field(default_factory=lambda: dict.fromkeys(SIDES))
    settings: dict[str, dict[str, Any]] = field(default_factory=lambda: {s: {} for s in SIDES})
    state: State = "generating"
    error: str | None = None
    prompt_index: int | None = None  # its place in the prompts file, when drawn from it unchanged

    def side(self, name: str) -> Side:
        return Side(self.models[name], self.replies[name], self.settings[name], self.finish[name])


def pair_key(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


class BattleBook:
    """The open battles and the votes per pair of ``models``; one per server, used from its event loop."""

    def __init__(
        self,
        models: Sequence[str],
        votes: Sequence[Vote] = (),
        *,
        rng: random.Random | None = None,
        max_open: int = MAX_OPEN,
        ttl: float = TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if len(models) < 2:
            raise PrefkitError(
                "the arena needs at least two models (the base and an adapter, or two adapters)"
            )
        self.models = list(models)
        self.pairs = [pair_key(a, b) for a, b in itertools.combinations(self.models, 2)]
        self.voted: Counter[tuple[str, str]] = Counter(
            pair_key(*v.models) for v in votes if set(v.models) <= set(self.models)
        )
        self.total_votes = len(votes)
        self.battles: dict[str, Battle] = {}
        self.rng = rng or random.SystemRandom()
        self.max_open = max_open
        self.ttl = ttl
        self.clock = clock

    def open(self, prompt: Sequence[Message]) -> Battle:
        """A new battle for ``prompt`` between the pair with the fewest votes, sides in random order."""
        self._forget_old()
        load = Counter(self.voted)
        recent = self.clock() - GRACE
        load.update(
            pair_key(*b.models.values())
            for b in self.battles.values()
            if b.state != "voted" and b.created >= recent
        )
        fewest = min(load[p] for p in self.pairs)
        pair = list(self.rng.choice([p for p in self.pairs if load[p] == fewest]))
        self.rng.shuffle(pair)
        battle = Battle(secrets.token_urlsafe(12), tuple(prompt), dict(zip(SIDES, pair, strict=True)))
        battle.created = self.clock()
        self.battles[battle.id] = battle
        return battle

    def get(self, battle_id: str) -> Battle:
        battle = self.battles.get(battle_id)
        if battle is not None and battle.created < self.clock() - self.ttl and battle.state != "voting":
            del self.battles[battle_id]  # past its time, though no new battle has swept it out yet
            battle = None
        if battle is None:
            raise BattleError(
                "No open battle has this id: it was never opened on this server, or it waited for a vote "
                f"for longer than {self.ttl / 3600:g} hours (or over {GRACE / 60:g} minutes while "
                f"{self.max_open} others were open), or the server restarted since.",
                404,
                "battle_not_found",
            )
        return battle

    def discard(self, battle_id: str) -> None:
        """Forget a battle whose replies will not be finished (its client went away, or it failed)."""
        battle = self.battles.get(battle_id)
        if battle is not None and battle.state in ("generating", "failed"):
            del self.battles[battle_id]

    def start_vote(self, battle_id: str, winner: str, voter: str | None) -> Vote:
        """The vote to write for ``battle_id``; the battle is ``voting`` until :meth:`recorded` or
        :meth:`not_recorded` (a second vote meanwhile is refused, as after)."""
        battle = self.get(battle_id)
        if battle.state in ("voting", "voted"):
            raise BattleError(
                "This battle has been voted on already: one vote per battle.", 409, "already_voted"
            )
        if battle.state == "generating":
            raise BattleError("Both replies must be finished before a vote.", 409, "battle_not_ready")
        if battle.state == "failed":
            raise BattleError(
                f"A reply in this battle could not be generated ({battle.error}); it takes no vote.",
                409,
                "battle_failed",
            )
        battle.state = "voting"
        chosen: Winner = winner  # type: ignore[assignment]  # checked by the request's schema
        a, b = battle.side("a"), battle.side("b")
        return Vote(battle.id, now(), battle.prompt, a, b, chosen, voter, battle.prompt_index)

    def recorded(self, vote: Vote) -> None:
        self.battles[vote.id].state = "voted"
        self.voted[pair_key(*vote.models)] += 1
        self.total_votes += 1

    def not_recorded(self, vote: Vote) -> None:
        self.battles[vote.id].state = "ready"

    def _forget_old(self) -> None:
        """Forget battles past ``ttl``; then, for room under ``max_open``, voted ones and unvoted ones older
        than ``GRACE``, oldest first. A voted battle is kept until then so that a second vote gets
        "already voted", not "no such battle"."""
        now = self.clock()
        for battle_id in [
            i for i, b in self.battles.items() if b.created < now - self.ttl and b.state != "voting"
        ]:
            del self.battles[battle_id]
        while len(self.battles) >= self.max_open:
            evictable = [
                b
                for b in self.battles.values()
                if b.state == "voted" or (b.state != "voting" and b.created < now - GRACE)
            ]
            if not evictable:
                raise BattleError(
                    f"{len(self.battles)} battles are open, the most this server keeps: vote on yours, or "
                    "try again in a few minutes.",
                    429,
                    "too_many_battles",
                )
            del self.battles[min(evictable, key=lambda b: (b.state != "voted", b.created)).id]
