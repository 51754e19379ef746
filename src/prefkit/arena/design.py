"""The A/B test's design for the two highest-rated models: how many more votes would tell them apart
(see :mod:`prefkit.arena.stats`' docstring, **Design**)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from prefkit.arena.ratings import Z95
from prefkit.arena.votes import Vote


class Rated(Protocol):  # prefkit.arena.stats.ModelStats, as far as the design reads it
    model: str


class Pair(Protocol):  # prefkit.arena.stats.PairStats, as far as the design reads it
    first: str
    second: str
    battles: int
    first_wins: int
    second_wins: int
    separated: bool

    @property
    def decisive(self) -> int: ...


Z80 = 0.8416212335729143  # 80% power: the standard normal's 80th percentile
MIN_DESIGN_VOTES = 10  # decisive votes (the pair's, or all for a rate from ratings) before a vote count
EVEN = 1e-9  # |p - 0.5| below this is "even": a rate from ratings is 0.5 only up to float rounding

Source = Literal["votes", "ratings"]

EVEN_REASON = "even at the current rate: no number of votes separates them"
FEW_MODELS_REASON = "fewer than two models have met: nothing to compare"


def decisive_votes_needed(p: float) -> int | None:
    """Decisive votes a two-sided test of "rate = 50%" at the 5% level needs for 80% power if ``p`` is
    the true rate (the normal approximation to the binomial)::

        n = ceil(((Z95 · 0.5 + Z80 · sqrt(p (1 − p))) / (p − 0.5))²)

    where 0.5 = sqrt(0.5 · 0.5) is the standard deviation of one vote under "even". Worked example:
    p = 0.7 gives ((1.96 · 0.5 + 0.8416 · sqrt(0.21)) / 0.2)² = ((0.98 + 0.8416 · 0.4583) / 0.2)²
    = (1.3657 / 0.2)² = 46.6, so 47 decisive votes. ``None`` when p is 50% (to within ``EVEN``): then
    no number of votes separates the two.
    """
    if abs(p - 0.5) < EVEN:
        return None
    return math.ceil(((Z95 * 0.5 + Z80 * math.sqrt(p * (1 - p))) / (p - 0.5)) ** 2)


@dataclass(frozen=True)
class Design:
    """How many more votes would tell the two highest-rated models apart (see the module docstring)."""

    leader: str | None
    runner_up: str | None
    p: float | None  # the leader's win rate over the runner-up
    source: Source | None  # "votes": their decisive votes; "ratings": σ(θ1 − θ2), as they have none
    battles: int  # votes between the two so far
    decisive: int  # of which decisive
    separated: bool
    decisive_needed: int | None
    votes_needed: int | None
    further_votes: int | None
    reason: str | None  # why the numbers are None


def design(
    models: Sequence[Rated],
    theta_by_rank: np.ndarray,
    pairs: Sequence[Pair],
    compared: Sequence[Vote],
) -> Design:
    if len(models) < 2:
        return Design(None, None, None, None, 0, 0, False, None, None, None, FEW_MODELS_REASON)
    leader, runner_up = models[0].model, models[1].model
    pair = next((p for p in pairs if {p.first, p.second} == {leader, runner_up}), None)
    battles = pair.battles if pair else 0
    decisive = pair.decisive if pair else 0
    separated = pair.separated if pair else False
    source: Source
    if pair and decisive:
        leader_wins = pair.first_wins if pair.first == leader else pair.second_wins
        p, source = leader_wins / decisive, "votes"
    else:
        p, source = 1 / (1 + math.exp(-(theta_by_rank[0] - theta_by_rank[1]))), "ratings"
    counted = decisive if source == "votes" else sum(v.decisive for v in compared)
    if counted < MIN_DESIGN_VOTES:  # a rate from 1 vote is 0% or 100%: it would promise a verdict in 4
        reason = (
            f"{counted} decisive votes are too few to estimate the rate; ask for {MIN_DESIGN_VOTES} first"
        )
        return Design(leader, runner_up, p, source, battles, decisive, separated, None, None, None, reason)
    needed = decisive_votes_needed(p)
    if needed is None:
        return Design(
            leader, runner_up, p, source, battles, decisive, separated, None, None, None, EVEN_REASON
        )
    # Ties and both-bad votes separate nothing, so it takes more votes than decisive ones: scale by the
    # decisive share of the pair's votes (of all votes when they have none yet; all of them if none of
    # the votes so far was decisive, as there is nothing better to go on). Integer arithmetic, so that
    # 47 / (1/3) is 141, not 142.
    share = (decisive, battles) if battles else (sum(v.decisive for v in compared), len(compared))
    if share[0] == 0:
        share = (1, 1)
    votes_needed = -(-needed * share[1] // share[0])
    return Design(
        leader,
        runner_up,
        p,
        source,
        battles,
        decisive,
        separated,
        needed,
        votes_needed,
        max(0, votes_needed - battles),
        None,
    )
