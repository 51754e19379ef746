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
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from prefkit.arena.votes import WINNERS, Vote

Z95 = 1.959963984540054  # two-sided 5% level: the standard normal's 97.5th percentile
Z80 = 0.8416212335729143  # 80% power: the standard normal's 80th percentile
PRIOR = 0.01  # precision of the Gaussian prior on each strength θ (see the module docstring)
ELO_SCALE = 400 / math.log(10)  # θ to Elo points: a difference of 400 points is odds of 10 to 1
ELO_BASE = 1000.0
MIN_DESIGN_VOTES = 10  # decisive votes (the pair's, or all for a rate from ratings) before a vote count
EVEN = 1e-9  # |p - 0.5| below this is "even": a rate from ratings is 0.5 only up to float rounding

Interval = tuple[float, float]
Source = Literal["votes", "ratings"]

EVEN_REASON = "even at the current rate: no number of votes separates them"
FEW_MODELS_REASON = "fewer than two models have met: nothing to compare"


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
    wins = _score_matrix(len(names), a_index, b_index, a_score)
    theta = _fit(wins, prior)
    ratings = ELO_BASE + ELO_SCALE * theta

    low, high = (ELO_BASE + ELO_SCALE * t for t in _laplace_interval(wins, theta, prior))
    if bootstrap and compared:
        rng = np.random.default_rng(seed)
        resampled = np.empty((bootstrap, len(names)))
        for r in range(bootstrap):
            pick = rng.integers(0, len(compared), size=len(compared))
            scores = _score_matrix(len(names), a_index[pick], b_index[pick], a_score[pick])
            resampled[r] = _fit(scores, prior, start=theta)  # the full fit is a close start: fewer steps
            # A model this resample left out has no rating in it (the fit would just say 1000).
            present = np.zeros(len(names), dtype=bool)
            present[a_index[pick]] = present[b_index[pick]] = True
            resampled[r, ~present] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column: a model left out every time
            boot_low, boot_high = np.nanpercentile(ELO_BASE + ELO_SCALE * resampled, [2.5, 97.5], axis=0)
        # The wider of the two at each end (a model left out of every resample has the Laplace one).
        low, high = np.fmin(low, boot_low), np.fmax(high, boot_high)
    intervals: list[Interval | None] = [
        (float(lo), float(hi)) if math.isfinite(lo) and math.isfinite(hi) else None
        for lo, hi in zip(low, high, strict=True)
    ]

    order = sorted(range(len(names)), key=lambda i: (-ratings[i], names[i]))
    models = [
        _model_stats(names[i], rank, float(ratings[i]), intervals[i], compared)
        for rank, i in enumerate(order, start=1)
    ]
    pairs = _pair_stats(compared)
    design = _design(models, theta[order] if len(order) else theta, pairs, compared)
    return ArenaStats(totals, models, pairs, design, voter_checks(compared), bootstrap, seed, prior)


_A_SCORE = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}


def _score_matrix(n: int, a: np.ndarray, b: np.ndarray, a_score: np.ndarray) -> np.ndarray:
    """W[i, j]: model i's score against model j, wins plus half of the ties and both-bad votes."""
    forward = np.bincount(a * n + b, weights=a_score, minlength=n * n)
    backward = np.bincount(b * n + a, weights=1 - a_score, minlength=n * n)
    return (forward + backward).reshape(n, n)


def _log_posterior(theta: np.ndarray, wins: np.ndarray, prior: float) -> float:
    diff = theta[:, None] - theta[None, :]
    # log σ(x) = −log(1 + e^−x), via logaddexp so a large |x| neither overflows nor rounds to log 0
    return float(-(wins * np.logaddexp(0.0, -diff)).sum() - prior / 2 * (theta @ theta))


def _fit(wins: np.ndarray, prior: float, start: np.ndarray | None = None) -> np.ndarray:
    """Bradley–Terry strengths θ maximising Σ W[i,j] log σ(θi − θj) − prior/2 · Σθ², with Σθ = 0.

    Newton's method with a backtracking line search. The objective is concave (strictly so with a
    prior), so this converges from anywhere. The gradient is s_i − Σ_j n_ij σ(θi − θj) − prior·θi
    (observed score minus expected score); the Hessian is minus a weighted graph Laplacian, minus
    prior·I. Without a prior the Hessian is singular (adding a constant to every θ changes nothing);
    the least-squares (minimum-norm) step then moves no connected group of models as a whole, so each
    group keeps the mean it starts with, 0. With a prior the optimum has mean 0 in each group anyway:
    shifting a group towards 0 lowers Σθ² and leaves the likelihood as it is.
    """
    n = wins.shape[0]
    games = wins + wins.T
    observed = wins.sum(axis=1)
    theta = np.zeros(n) if start is None else start - start.mean()
    value = _log_posterior(theta, wins, prior)
    for _ in range(100):
        diff = theta[:, None] - theta[None, :]
        p = 0.5 * (1 + np.tanh(diff / 2))  # σ(diff), without overflow
        gradient = observed - (games * p).sum(axis=1) - prior * theta
        if np.abs(gradient).max(initial=0.0) < 1e-12 * (1 + observed.sum()):
            break
        curvature = _curvature(games, p, prior)
        step = np.linalg.lstsq(curvature, gradient, rcond=None)[0]
        # Full Newton steps near the optimum; halve them far from it, where the quadratic model is poor.
        # The small slack lets a full step through when the objective has converged to rounding.
        slack = 1e-12 * (1 + abs(value))
        for _ in range(50):
            candidate = theta + step
            new_value = _log_posterior(candidate, wins, prior)
            if new_value >= value - slack:
                break
            step = step / 2
        else:
            break  # no step improves: converged as far as floating point allows
        theta, value = candidate, new_value
        if np.abs(step).max(initial=0.0) < 1e-14:
            break
    # Without a prior, a model that won every vote has no finite maximum: the loop above stops at a large
    # but finite θ. Centre for good measure: rounding can drift the mean.
    return theta - theta.mean() if n else theta


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


def _curvature(games: np.ndarray, p: np.ndarray, prior: float) -> np.ndarray:
    """Minus the Hessian of the log-posterior (positive semi-definite): a weighted graph Laplacian of
    the games, weighted by σ(1 − σ), plus prior·I."""
    weight = games * p * (1 - p)
    return np.diag(weight.sum(axis=1) + prior) - weight


def _laplace_interval(wins: np.ndarray, theta: np.ndarray, prior: float) -> tuple[np.ndarray, np.ndarray]:
    """θ ± Z95 standard errors, the errors from the curvature of the log-posterior at its maximum (the
    Laplace approximation). A pseudo-inverse, as without a prior the curvature is singular along "all
    θ move together"."""
    n = len(theta)
    if n == 0:
        return theta, theta
    games = wins + wins.T
    p = 0.5 * (1 + np.tanh((theta[:, None] - theta[None, :]) / 2))
    covariance = np.linalg.pinv(_curvature(games, p, prior))
    # The ratings are centred (Σθ = 0): their covariance is the centred one. Without centring, the weak
    # prior's loose hold on "every θ shifts together" would swamp every model's error.
    centre = np.eye(n) - 1.0 / n
    spread = np.sqrt(np.clip(np.diag(centre @ covariance @ centre), 0.0, None))
    return theta - Z95 * spread, theta + Z95 * spread


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


def _design(
    models: Sequence[ModelStats],
    theta_by_rank: np.ndarray,
    pairs: Sequence[PairStats],
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
