"""The arena's statistics: what the votes say about which model is better, and how sure that is.

**Totals.** ``votes`` is every vote read; ``decisive`` those that picked a side (``a`` or ``b``); ``ties``
those that said both replies were equally good and ``both_bad`` those that said both were bad; ``voters``
the distinct names that voted (votes without a name count together as one anonymous voter);
``same_model`` the votes between two replies of one model, which are counted in the totals but say
nothing about one model against another and are left out of everything below; ``models`` the number of
models that met another one.

**Per model.** ``battles`` is the number of votes a model was in; ``wins``, ``losses``, ``ties`` and
``both_bad`` split them by outcome, from that model's side. ``win_rate`` is wins / (wins + losses): the
share of the decisive votes it won, against whichever opponents it happened to meet (so it is not
comparable across models that met different opponents; the rating is). It comes with a 95% Wilson
interval, the range of true win rates the votes are consistent with. No decisive votes: no win rate.

**Ratings.** One number per model on the familiar Elo scale: 1000 is the average model, and a model
rated 400 points above another is expected to win 10 of every 11 decisive votes against it (200 points:
3 of 4; 100 points: 64%). They come from a Bradley–Terry model: each model has a strength θ, and model
i beats model j with probability σ(θi − θj) = 1 / (1 + e^(θj − θi)); the strengths are the ones that
make the votes seen most likely (maximum likelihood), all the votes at once, so beating a strong model
counts for more than beating a weak one, and the order of the votes does not matter (unlike an Elo
ladder). A tie or a both-bad vote counts as half a win for each side. ``rank`` 1 is the highest rating
(equal ratings are ranked by name).

To keep ratings finite when a model won (or lost) every vote it was in, the fit adds a weak Gaussian
prior: it maximises log-likelihood − ``prior``/2 · Σθ², as if every model had a little evidence of
being average. The default ``PRIOR`` = 0.01 is a standard deviation of 10 in θ (some 1700 Elo
points): it barely moves a model that has both won and lost a few votes, but it turns "won 5 of 5" into
a rating about 900 points ahead instead of an infinitely far one. Models that never met the others
(directly or through a chain of opponents) cannot be placed against them; the prior puts each such
group around 1000.

``rating_interval`` is a 95% interval, the wider at each end of two: a percentile bootstrap (the votes
resampled with replacement ``bootstrap`` times, default 1000, seeded so the same votes give the same
interval; the ratings refitted each time; the middle 95% of each model's ratings) and the Laplace
interval (rating ± 1.96 standard errors from the curvature of the fit). Each alone misleads somewhere:
with a handful of votes every resample is nearly the same votes, so the bootstrap comes out far too
narrow (one vote, one value), while the Laplace interval trusts the Bradley–Terry model and cannot see
voters who disagree more than it expects. A resample that leaves a model out has no rating for it and
does not count towards its bootstrap interval. With ``bootstrap`` 0 the interval is the Laplace one.

**Per pair.** For two models (named in alphabetical order, ``first`` and ``second``): ``battles``
between them, split into ``first_wins``, ``second_wins``, ``ties`` and ``both_bad``; ``first_win_rate``
= first_wins / (first_wins + second_wins) with its 95% Wilson interval; ``separated`` when that interval
excludes 50%: the votes so far show, at about the 5% level, that one of the two is preferred. That level
holds for a number of votes fixed in advance. Looking after every vote and stopping at the first
"separated" finds a difference between two equal models far more often (some 40% of 200-vote studies
touch "separated" at some point): decide the number of votes first (the design below), then read the
figure. With many pairs, expect about one in twenty to show "separated" by chance.

**Design.** For the two highest-rated models: ``p`` is the leader's win rate over the runner-up among
their decisive votes against each other (``source`` "votes"), or, when they have never met, the rate
their ratings predict, σ(θ1 − θ2) (``source`` "ratings"). ``decisive_needed`` is how many decisive votes
between them a two-sided test at the 5% level needs to tell them apart 80% of the time, if ``p`` is the
true rate (see :func:`decisive_votes_needed`); ``votes_needed`` the votes that takes once ties and
both-bad votes are counted in, at their current share of the pair's votes (of all votes when the pair
has none); ``further_votes`` how many more than they have had. When ``p`` is 50% no number of votes
separates them, and ``reason`` says so; with fewer than ``MIN_DESIGN_VOTES`` decisive votes to take ``p``
from (the pair's, or all votes for a rate from ratings) it is not estimated either: after one vote the
rate is 0% or 100%, which would promise a verdict in a handful of votes.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from prefkit.arena.design import Design, design
from prefkit.arena.ratings import ELO_BASE, ELO_SCALE, PRIOR, Z95, Interval, fit_ratings
from prefkit.arena.votes import WINNERS, Vote


def wilson(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for a proportion: ``successes`` of ``n`` (either may be fractional).

    It stays inside [0, 1] and, unlike the normal approximation p ± z·sqrt(p(1−p)/n), is not empty at
    0 of n or n of n. ``n == 0`` says nothing: (0.0, 1.0).
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"wilson: expected 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # At 0 of n and n of n the bound is exactly 0 or 1; the formula gets there only up to rounding.
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return low, high


@dataclass(frozen=True)
class Totals:
    votes: int
    decisive: int
    ties: int
    both_bad: int
    voters: int
    models: int
    same_model: int  # votes between two replies of one model: in the counts above, in nothing else


@dataclass(frozen=True)
class ModelStats:
    model: str
    rank: int  # 1 = highest rating
    rating: float  # Elo scale: 1000 + 400 / ln 10 · θ, with Σθ = 0
    rating_interval: Interval | None  # 95%: the wider of the bootstrap's and the Laplace one
    battles: int
    wins: int
    losses: int
    ties: int
    both_bad: int
    win_rate: float | None  # wins / (wins + losses); None without decisive votes
    win_rate_interval: Interval | None  # 95% Wilson
    mean_reply_chars: float  # the length of its replies, for the "longer reply" check


@dataclass(frozen=True)
class PairStats:
    first: str  # the two models in alphabetical order
    second: str
    battles: int
    first_wins: int
    second_wins: int
    ties: int
    both_bad: int
    first_win_rate: float | None  # first_wins / (first_wins + second_wins); None without decisive votes
    first_win_rate_interval: Interval | None  # 95% Wilson
    separated: bool  # the interval excludes 0.5

    @property
    def decisive(self) -> int:
        return self.first_wins + self.second_wins


@dataclass(frozen=True)
class Check:
    """A check on the voters rather than the models: a share of decisive votes that is 50% when votes
    follow the content alone. ``flagged`` when its 95% Wilson interval excludes 50%."""

    name: Literal["left_reply", "longer_reply"]
    share: float | None  # of the ``votes`` it counts, the share won by the left reply / the longer reply
    interval: Interval | None
    votes: int  # decisive votes it counts (for length: those whose replies differ in length)
    flagged: bool


@dataclass(frozen=True)
class ArenaStats:
    totals: Totals
    models: list[ModelStats]  # by rank
    pairs: list[PairStats]  # by (first, second)
    design: Design
    checks: list[Check]
    bootstrap: int
    seed: int
    prior: float

    def model(self, name: str) -> ModelStats:
        for m in self.models:
            if m.model == name:
                return m
        raise KeyError(name)

    def pair(self, one: str, other: str) -> PairStats | None:
        """The two models' pair, whichever order they are named in; None if they never met."""
        first, second = sorted((one, other))
        for p in self.pairs:
            if (p.first, p.second) == (first, second):
                return p
        return None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types only: intervals as [low, high], undefined numbers as null."""
        return {
            "totals": _json(vars(self.totals)),
            "models": [_json(vars(m)) for m in self.models],
            "pairs": [_json(vars(p)) for p in self.pairs],
            "design": _json(vars(self.design)),
            "checks": [_json(vars(c)) for c in self.checks],
            "method": {
                "ratings": "Bradley-Terry, ties and both_bad as half a win each, Elo scale",
                "bootstrap": self.bootstrap,
                "seed": self.seed,
                "prior": self.prior,
            },
        }


def _json(fields: dict[str, Any]) -> dict[str, Any]:
    return {key: _json_value(value) for key, value in fields.items()}


def _json_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None  # json.dumps(allow_nan=False) refuses NaN and infinity; a diverged number is undefined
    return value


def arena_stats(
    votes: Sequence[Vote], *, bootstrap: int = 1000, seed: int = 0, prior: float = PRIOR
) -> ArenaStats:
    """Every figure of the module docstring, from ``votes``."""
    if bootstrap < 0:
        raise ValueError(f"bootstrap: expected a number of resamples >= 0, got {bootstrap}")
    if not (prior >= 0 and math.isfinite(prior)):
        raise ValueError(f"prior: expected a finite number >= 0, got {prior}")
    for v in votes:
        if v.winner not in WINNERS:
            raise ValueError(f"vote {v.id}: winner {v.winner!r} is not one of {', '.join(WINNERS)}")

    outcomes = Counter(v.winner for v in votes)
    voters = {v.voter for v in votes}  # None, if present, is the one anonymous voter
    # A model against itself says nothing about one model against another.
    compared = [v for v in votes if v.a.model != v.b.model]
    names = sorted({m for v in compared for m in v.models})
    index = {name: i for i, name in enumerate(names)}
    totals = Totals(
        votes=len(votes),
        decisive=outcomes["a"] + outcomes["b"],
        ties=outcomes["tie"],
        both_bad=outcomes["both_bad"],
        voters=len(voters),
        models=len(names),
        same_model=len(votes) - len(compared),
    )

    # Each vote as (a's index, b's index, a's score). A tie and a both-bad vote are both "neither is
    # better", so each counts as half a win for each side.
    a_index = np.array([index[v.a.model] for v in compared], dtype=np.int64)
    b_index = np.array([index[v.b.model] for v in compared], dtype=np.int64)
    a_score = np.array([_A_SCORE[v.winner] for v in compared], dtype=np.float64)
    theta, intervals = fit_ratings(len(names), a_index, b_index, a_score, prior, bootstrap, seed)
    ratings = ELO_BASE + ELO_SCALE * theta

    order = sorted(range(len(names)), key=lambda i: (-ratings[i], names[i]))
    models = [
        _model_stats(names[i], rank, float(ratings[i]), intervals[i], compared)
        for rank, i in enumerate(order, start=1)
    ]
    pairs = _pair_stats(compared)
    the_design = design(models, theta[order] if len(order) else theta, pairs, compared)
    return ArenaStats(totals, models, pairs, the_design, voter_checks(compared), bootstrap, seed, prior)


_A_SCORE = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}


def voter_checks(compared: Sequence[Vote]) -> list[Check]:
    """Position and length: does the left reply, or the longer one, win more than half the decisive
    votes? Sides are drawn at random per battle, so a left-reply share away from 50% is the voters'
    habit, not the models'. A longer-reply share far above 50% says the votes reward length -- which a
    model can learn to game -- as much as content; the models' ``mean_reply_chars`` show who writes
    longer."""
    decisive = [v for v in compared if v.decisive]
    left = sum(v.winner == "a" for v in decisive)
    sized = [v for v in decisive if len(v.a.reply) != len(v.b.reply)]
    longer = sum((v.winner == "a") == (len(v.a.reply) > len(v.b.reply)) for v in sized)

    def check(name: Literal["left_reply", "longer_reply"], won: int, n: int) -> Check:
        interval = wilson(won, n) if n else None
        flagged = interval is not None and (interval[0] > 0.5 or interval[1] < 0.5)
        return Check(name, won / n if n else None, interval, n, flagged)

    return [check("left_reply", left, len(decisive)), check("longer_reply", longer, len(sized))]


def _model_stats(
    name: str, rank: int, rating: float, interval: Interval | None, compared: Sequence[Vote]
) -> ModelStats:
    wins = losses = ties = both_bad = battles = chars = 0
    for v in compared:
        if name not in v.models:
            continue
        battles += 1
        side = "a" if v.a.model == name else "b"
        chars += len((v.a if side == "a" else v.b).reply)
        if v.winner == side:
            wins += 1
        elif v.winner == "tie":
            ties += 1
        elif v.winner == "both_bad":
            both_bad += 1
        else:
            losses += 1
    decisive = wins + losses
    return ModelStats(
        model=name,
        rank=rank,
        rating=rating,
        rating_interval=interval,
        battles=battles,
        wins=wins,
        losses=losses,
        ties=ties,
        both_bad=both_bad,
        win_rate=wins / decisive if decisive else None,
        win_rate_interval=wilson(wins, decisive) if decisive else None,
        mean_reply_chars=chars / battles if battles else 0.0,
    )


def _pair_stats(compared: Sequence[Vote]) -> list[PairStats]:
    counts: dict[tuple[str, str], Counter[str]] = {}
    for v in compared:
        first, second = sorted(v.models)
        c = counts.setdefault((first, second), Counter())
        c["battles"] += 1
        if v.winner in ("a", "b"):
            winner = v.a.model if v.winner == "a" else v.b.model
            c["first_wins" if winner == first else "second_wins"] += 1
        else:
            c["ties" if v.winner == "tie" else "both_bad"] += 1
    pairs = []
    for (first, second), c in sorted(counts.items()):
        decisive = c["first_wins"] + c["second_wins"]
        interval = wilson(c["first_wins"], decisive) if decisive else None
        pairs.append(
            PairStats(
                first=first,
                second=second,
                battles=c["battles"],
                first_wins=c["first_wins"],
                second_wins=c["second_wins"],
                ties=c["ties"],
                both_bad=c["both_bad"],
                first_win_rate=c["first_wins"] / decisive if decisive else None,
                first_win_rate_interval=interval,
                separated=interval is not None and (interval[0] > 0.5 or interval[1] < 0.5),
            )
        )
    return pairs
