"""The arena's statistics (prefkit.arena.stats) and report (prefkit.arena.report), against values worked
out by hand: the Wilson interval, the Bradley–Terry ratings (the two-model MLE is the log-odds; with
three models the likelihood equations are checked independently of the fit), the bootstrap, the vote
counts, and the number of votes the top two need."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path
from statistics import NormalDist

import pytest

from prefkit.arena.design import EVEN_REASON, FEW_MODELS_REASON, Z80, decisive_votes_needed
from prefkit.arena.ratings import ELO_SCALE, PRIOR, Z95
from prefkit.arena.report import format_stats, plot_stats
from prefkit.arena.stats import ArenaStats, arena_stats, wilson
from prefkit.arena.votes import Side, Vote
from prefkit.data.examples import Message

_ids = itertools.count()


def vote(model_a: str, model_b: str, winner: str, voter: str | None = None) -> Vote:
    return Vote(
        id=f"v{next(_ids)}",
        time=0.0,
        prompt=(Message("user", "hello"),),
        a=Side(model_a, f"reply of {model_a}"),
        b=Side(model_b, f"reply of {model_b}"),
        winner=winner,  # type: ignore[arg-type]
        voter=voter,
    )


def votes(
    model_a: str, model_b: str, *, a: int = 0, b: int = 0, tie: int = 0, both_bad: int = 0
) -> list[Vote]:
    """``a`` wins for model_a, ``b`` for model_b, and so on, all with model_a shown on the left."""
    counts = {"a": a, "b": b, "tie": tie, "both_bad": both_bad}
    return [vote(model_a, model_b, w) for w, n in counts.items() for _ in range(n)]


def theta(stats: ArenaStats, name: str) -> float:
    """A model's strength back from its Elo-scale rating: θ = (rating − 1000) · ln 10 / 400."""
    return (stats.model(name).rating - 1000) / ELO_SCALE


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# ---------------------------------------------------------------- Wilson


def test_wilson_seven_of_ten():
    """p = 0.7, n = 10, z = 1.959964, z² = 3.841459:
    denominator = 1 + z²/n = 1.3841459
    centre = (p + z²/2n) / denominator = (0.7 + 0.1920729) / 1.3841459 = 0.6444798
    half = z / denominator · sqrt(p(1−p)/n + z²/4n²) = 1.4160018 · sqrt(0.021 + 0.0096036)
         = 1.4160018 · 0.1749389 = 0.2477138
    interval = (0.6444798 − 0.2477138, 0.6444798 + 0.2477138) = (0.3968, 0.8922)"""
    low, high = wilson(7, 10)
    assert low == pytest.approx(0.39677, abs=1e-5)
    assert high == pytest.approx(0.89221, abs=1e-5)


def test_wilson_edges():
    assert wilson(0, 0) == (0.0, 1.0)
    # 10 of 10: centre = 1.1920729 / 1.3841459 = 0.8612327; half = 1.4160018 · sqrt(0.0096036) = 0.1387655
    low, high = wilson(10, 10)
    assert high == 1.0
    assert low == pytest.approx(0.8612327 - 0.1387655, abs=1e-6)  # 0.7225
    low, high = wilson(0, 10)  # the mirror image
    assert low == 0.0
    assert high == pytest.approx(1 - 0.7224672, abs=1e-6)
    assert wilson(2.5, 5) == pytest.approx((1 - wilson(2.5, 5)[1], 1 - wilson(2.5, 5)[0]))  # half-votes
    with pytest.raises(ValueError):
        wilson(11, 10)


# ---------------------------------------------------------------- ratings


def test_two_models_without_prior_is_the_log_odds():
    """Two models, 6 wins to 2, no prior: the MLE is θA − θB = ln(6/2) = ln 3, so the ratings differ by
    400 / ln 10 · ln 3 = 400 · log10 3 = 190.85 points, symmetric about 1000 (Σθ = 0)."""
    stats = arena_stats(votes("A", "B", a=6, b=2), bootstrap=0, prior=0)
    a, b = stats.model("A").rating, stats.model("B").rating
    assert a - b == pytest.approx(400 * math.log10(3), abs=1e-8)
    assert a - b == pytest.approx(190.8485, abs=1e-4)
    assert (a + b) / 2 == pytest.approx(1000, abs=1e-9)
    assert [m.model for m in stats.models] == ["A", "B"]
    assert [m.rank for m in stats.models] == [1, 2]


def test_a_tie_and_a_both_bad_are_half_a_win_each():
    """5 wins, 1 loss and 2 ties score 5 + 2·½ = 6 against 1 + 2·½ = 2: the same ratings as 6 to 2,
    400 · log10 3 apart. Both-bad votes in place of the ties: the same again."""
    plain = arena_stats(votes("A", "B", a=6, b=2), bootstrap=0, prior=0)
    with_ties = arena_stats(votes("A", "B", a=5, b=1, tie=2), bootstrap=0, prior=0)
    with_both_bad = arena_stats(votes("A", "B", a=5, b=1, both_bad=2), bootstrap=0, prior=0)
    for stats in (with_ties, with_both_bad):
        assert stats.model("A").rating - stats.model("B").rating == pytest.approx(
            400 * math.log10(3), abs=1e-8
        )
        assert stats.model("A").rating == pytest.approx(plain.model("A").rating, abs=1e-8)
    # with the prior too, a tie and a both-bad vote are interchangeable
    assert arena_stats(votes("A", "B", a=3, b=1, tie=2), bootstrap=0).model("A").rating == pytest.approx(
        arena_stats(votes("A", "B", a=3, b=1, both_bad=2), bootstrap=0).model("A").rating, abs=1e-9
    )


def test_swapping_sides_changes_nothing():
    """Which reply was shown on the left is irrelevant: the same battles with a and b swapped (and the
    winner with them) give the same ratings, intervals and counts."""
    original = [
        *votes("A", "B", a=4, b=2, tie=1),
        *votes("B", "C", a=3, b=3, both_bad=1),
        *votes("C", "A", a=1, b=5),
    ]
    swap = {"a": "b", "b": "a", "tie": "tie", "both_bad": "both_bad"}
    swapped = [vote(v.b.model, v.a.model, swap[v.winner]) for v in original]
    one, other = arena_stats(original, bootstrap=50), arena_stats(swapped, bootstrap=50)
    for m in one.models:
        n = other.model(m.model)
        assert n.rating == pytest.approx(m.rating, abs=1e-9)
        assert n.rating_interval == pytest.approx(m.rating_interval, abs=1e-6)
        assert (n.wins, n.losses, n.ties, n.both_bad, n.rank) == (
            m.wins,
            m.losses,
            m.ties,
            m.both_bad,
            m.rank,
        )
    assert one.pairs == other.pairs


THREE = [
    *votes("A", "B", a=6, b=3),  # A–B: A scores 6, B 3
    *votes("B", "C", a=5, b=4, tie=2),  # B–C: B scores 5 + 1 = 6, C 4 + 1 = 5
    *votes("C", "A", a=1, b=7, both_bad=1),  # C–A: C scores 1 + ½, A 7 + ½
]


@pytest.mark.parametrize("prior", [0.0, PRIOR, 0.5])
def test_three_models_satisfy_the_likelihood_equations(prior):
    """At the maximum of Σ W_ij log σ(θi − θj) − prior/2 Σθ² the gradient is zero:
        observed score_i = Σ_j n_ij σ(θi − θj) + prior · θi
    with the scores counted by hand: A 6 + 7.5 = 13.5 (n_AB = 9, n_AC = 9), B 3 + 6 = 9 (n_BC = 11),
    C 5 + 1.5 = 6.5. The θ come back from the ratings, so this checks the fit without its own code."""
    stats = arena_stats(THREE, bootstrap=0, prior=prior)
    t = {name: theta(stats, name) for name in "ABC"}
    games = {("A", "B"): 9, ("B", "C"): 11, ("A", "C"): 9}
    observed = {"A": 13.5, "B": 9.0, "C": 6.5}
    for i in "ABC":
        expected = sum(
            n * sigmoid(t[i] - t[j])
            for (x, y), n in games.items()
            for j in (y if x == i else x,)
            if i in (x, y)
        )
        assert observed[i] == pytest.approx(expected + prior * t[i], abs=1e-8), i
    assert sum(t.values()) == pytest.approx(0, abs=1e-9)
    assert [m.model for m in stats.models] == ["A", "B", "C"]
    assert [m.rank for m in stats.models] == [1, 2, 3]
    if prior:  # the prior pulls everyone towards 1000
        unshrunk = arena_stats(THREE, bootstrap=0, prior=0)
        assert abs(theta(stats, "A")) < abs(theta(unshrunk, "A"))


def test_an_undefeated_model_gets_a_finite_rating():
    """A won all 5 votes against B. With the prior, θA = d/2 = −θB where the gradient vanishes:
    5 − 5σ(d) − prior · d/2 = 0, i.e. 5σ(−d) = prior · d/2 (d ≈ 5.25 at 0.01: about 910 points).
    A smaller prior lets it move further."""
    undefeated = votes("A", "B", a=5)
    default = arena_stats(undefeated, bootstrap=0)
    d = theta(default, "A") - theta(default, "B")
    assert math.isfinite(d)
    assert 5 * sigmoid(-d) == pytest.approx(PRIOR * d / 2, abs=1e-10)
    assert 850 < default.model("A").rating - default.model("B").rating < 1000
    weaker = arena_stats(undefeated, bootstrap=0, prior=0.001)
    assert math.isfinite(weaker.model("A").rating)
    assert weaker.model("A").rating > default.model("A").rating
    # also among other models: A beat B every time, B and C are even
    mixed = arena_stats([*undefeated, *votes("B", "C", a=3, b=3)], bootstrap=20)
    assert all(math.isfinite(m.rating) for m in mixed.models)
    assert mixed.models[0].model == "A"


def test_models_that_never_met_the_others():
    """Two groups that never met: no crash, and the prior centres each group on 1000."""
    stats = arena_stats([*votes("A", "B", a=3, b=1), *votes("C", "D", a=1, b=2)], bootstrap=20)
    assert stats.model("A").rating + stats.model("B").rating == pytest.approx(2000, abs=1e-6)
    assert stats.model("C").rating + stats.model("D").rating == pytest.approx(2000, abs=1e-6)
    assert all(math.isfinite(m.rating) for m in stats.models)
    assert stats.pair("A", "C") is None


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_is_deterministic_and_sensible():
    many = votes("A", "B", a=40, b=20)
    first, again = arena_stats(many, bootstrap=300, seed=7), arena_stats(many, bootstrap=300, seed=7)
    assert [m.rating_interval for m in first.models] == [m.rating_interval for m in again.models]
    for m in first.models:
        assert m.rating_interval is not None
        low, high = m.rating_interval
        assert low < m.rating < high
    # The same 2:1 record from a tenth of the votes is far less certain.
    few = arena_stats(votes("A", "B", a=4, b=2), bootstrap=300, seed=7)

    def width(stats: ArenaStats) -> float:
        interval = stats.model("A").rating_interval
        assert interval is not None
        return interval[1] - interval[0]

    assert width(few) > 2 * width(first)


def test_the_interval_is_the_laplace_one_without_a_bootstrap_and_never_narrower_with_one():
    # 40:20 between two models: the centred strengths are ±d/2 with d = ln 2 (prior aside); the
    # curvature of the log-likelihood in d is 60 · σ(d)(1 − σ(d)) = 60 · 2/9 = 13.33, so the standard
    # error of d is 1/sqrt(13.33) = 0.2739 and of A's centred θ half that, 0.1369: ±1.96 · 0.1369 θ is
    # ±0.2684 θ, or ±0.2684 · 400 / ln 10 = ±46.6 Elo points.
    many = votes("A", "B", a=40, b=20)
    laplace = arena_stats(many, bootstrap=0, prior=0).model("A")
    assert laplace.rating_interval is not None
    low, high = laplace.rating_interval
    assert high - laplace.rating == pytest.approx(laplace.rating - low)
    assert high - laplace.rating == pytest.approx(46.6, abs=0.1)
    both = arena_stats(many, bootstrap=300, seed=1, prior=0).model("A")
    assert both.rating_interval is not None
    assert both.rating_interval[0] <= low and both.rating_interval[1] >= high


def test_one_vote_gives_a_wide_interval_not_a_point():
    # Every resample of a single vote is that vote: a bootstrap alone would give an interval of width 0.
    one = arena_stats(votes("A", "B", a=1), bootstrap=200)
    for m in one.models:
        assert m.rating_interval is not None
        assert m.rating_interval[1] - m.rating_interval[0] > 1000


# ---------------------------------------------------------------- counts


def test_counts_per_model_and_per_pair():
    """By hand: x–y: x wins 2 (once shown on the right), y wins 1, 1 tie; y–z: 1 both-bad, z wins 1;
    one vote of z against itself, counted in the totals only. Voters: ann, bob and the anonymous one."""
    data = [
        vote("x", "y", "a", "ann"),
        vote("y", "x", "b", "ann"),
        vote("x", "y", "b", "bob"),
        vote("y", "x", "tie", None),
        vote("y", "z", "both_bad", None),
        vote("z", "y", "a", "bob"),
        vote("z", "z", "a", "bob"),
    ]
    stats = arena_stats(data, bootstrap=0)
    t = stats.totals
    assert (t.votes, t.decisive, t.ties, t.both_bad, t.voters, t.models, t.same_model) == (
        7,
        5,
        1,
        1,
        3,
        3,
        1,
    )

    x, y, z = stats.model("x"), stats.model("y"), stats.model("z")
    assert (x.battles, x.wins, x.losses, x.ties, x.both_bad) == (4, 2, 1, 1, 0)
    assert (y.battles, y.wins, y.losses, y.ties, y.both_bad) == (6, 1, 3, 1, 1)
    assert (z.battles, z.wins, z.losses, z.ties, z.both_bad) == (2, 1, 0, 0, 1)
    assert x.win_rate == pytest.approx(2 / 3)
    assert x.win_rate_interval == pytest.approx(wilson(2, 3))
    assert y.win_rate == pytest.approx(1 / 4)

    xy = stats.pair("y", "x")
    assert xy is not None
    assert (xy.first, xy.second, xy.battles, xy.first_wins, xy.second_wins, xy.ties, xy.both_bad) == (
        "x",
        "y",
        4,
        2,
        1,
        1,
        0,
    )
    assert xy.first_win_rate == pytest.approx(2 / 3)
    assert not xy.separated
    yz = stats.pair("z", "y")
    assert yz is not None
    assert (yz.first, yz.second, yz.battles, yz.first_wins, yz.second_wins, yz.both_bad) == (
        "y",
        "z",
        2,
        0,
        1,
        1,
    )
    assert [(p.first, p.second) for p in stats.pairs] == [("x", "y"), ("y", "z")]


def test_a_pair_without_decisive_votes_has_no_rate():
    stats = arena_stats(votes("A", "B", tie=2, both_bad=1), bootstrap=0)
    pair = stats.pair("A", "B")
    assert pair is not None
    assert (pair.first_win_rate, pair.first_win_rate_interval, pair.separated) == (None, None, False)
    assert stats.model("A").win_rate is None
    assert stats.model("A").rating == pytest.approx(1000)


# ---------------------------------------------------------------- design


def test_decisive_votes_needed_worked_example():
    """p = 0.7: ((1.959964 · 0.5 + 0.841621 · sqrt(0.21)) / 0.2)² = ((0.979982 + 0.385681) / 0.2)²
    = 6.828315² = 46.63 → 47. p = 0.3 is the mirror image: 47 too."""
    assert NormalDist().inv_cdf(0.975) == pytest.approx(Z95, abs=1e-12)
    assert NormalDist().inv_cdf(0.80) == pytest.approx(Z80, abs=1e-12)
    assert ((Z95 * 0.5 + Z80 * math.sqrt(0.21)) / 0.2) ** 2 == pytest.approx(46.63, abs=0.01)
    assert decisive_votes_needed(0.7) == 47
    assert decisive_votes_needed(0.3) == 47
    assert decisive_votes_needed(0.5) is None
    # p = 0.6: ((0.979982 + 0.841621 · 0.489898) / 0.1)² = (1.392287 / 0.1)² = 13.92287² = 193.85 → 194
    assert decisive_votes_needed(0.6) == 194


def test_design_from_head_to_head_votes():
    """A beat B 7 times of 10: p = 0.7 from the votes, 47 decisive votes, all votes so far decisive, so
    47 votes, 37 more. 7 of 10 is not separated yet (Wilson 40%–89%)."""
    design = arena_stats(votes("A", "B", a=7, b=3), bootstrap=0).design
    assert (design.leader, design.runner_up, design.source) == ("A", "B", "votes")
    assert design.p == pytest.approx(0.7)
    assert (design.battles, design.decisive, design.separated) == (10, 10, False)
    assert (design.decisive_needed, design.votes_needed, design.further_votes) == (47, 47, 37)
    assert design.reason is None


def test_design_counts_ties_in():
    """The same 7 to 3 plus 10 ties: half the battles decisive, so 47 decisive votes take 94 votes, 74
    more than the 20 so far. The leader shown on the right changes nothing."""
    design = arena_stats(
        [*votes("B", "A", b=7, a=3), *votes("A", "B", tie=6, both_bad=4)], bootstrap=0
    ).design
    assert (design.leader, design.p, design.source) == ("A", pytest.approx(0.7), "votes")
    assert (design.decisive_needed, design.votes_needed, design.further_votes) == (47, 94, 74)
    # a third of the battles decisive: 47 · 30 / 10 = 141 exactly (integer arithmetic, no 141.00000001)
    third = arena_stats(votes("A", "B", a=7, b=3, tie=20), bootstrap=0).design
    assert (third.votes_needed, third.further_votes) == (141, 111)


def test_design_when_already_past_the_number():
    """A beat B 70 times of 100: 47 decisive votes were enough and they have had 100, so no more; and
    70 of 100 is separated (Wilson 60%–78%)."""
    design = arena_stats(votes("A", "B", a=70, b=30), bootstrap=0).design
    assert (design.decisive_needed, design.votes_needed, design.further_votes) == (47, 47, 0)
    assert design.separated
    assert "already separated" in format_stats(arena_stats(votes("A", "B", a=70, b=30), bootstrap=0))


def test_design_even():
    design = arena_stats(votes("A", "B", a=5, b=5, tie=3), bootstrap=0).design
    assert design.p == 0.5
    assert (design.decisive_needed, design.votes_needed, design.further_votes) == (None, None, None)
    assert design.reason == EVEN_REASON
    assert EVEN_REASON in format_stats(arena_stats(votes("A", "B", a=5, b=5), bootstrap=0))


def test_design_from_ratings_when_the_top_two_never_met():
    """A beat C 8 to 2; B beat C 6 to 4 with 4 ties; A and B never met, so p = σ(θA − θB) from the
    ratings. 20 of the 24 votes were decisive, so the votes needed are decisive_needed · 24 / 20, rounded
    up, all of them further votes."""
    stats = arena_stats([*votes("A", "C", a=8, b=2), *votes("B", "C", a=6, b=4, tie=4)], bootstrap=0)
    design = stats.design
    assert (design.leader, design.runner_up, design.source) == ("A", "B", "ratings")
    p = sigmoid(theta(stats, "A") - theta(stats, "B"))
    assert design.p == pytest.approx(p, abs=1e-9)
    needed = math.ceil(((Z95 * 0.5 + Z80 * math.sqrt(p * (1 - p))) / (p - 0.5)) ** 2)
    assert design.decisive_needed == needed
    assert design.votes_needed == math.ceil(needed * 24 / 20)
    assert design.further_votes == design.votes_needed
    assert (design.battles, design.separated) == (0, False)
    assert "have not met" in format_stats(stats)


def test_design_needs_two_models():
    for data in ([], [vote("A", "A", "a")]):
        design = arena_stats(data, bootstrap=0).design
        assert design.leader is None
        assert (design.p, design.decisive_needed, design.votes_needed, design.further_votes) == (
            None,
            None,
            None,
            None,
        )
        assert design.reason == FEW_MODELS_REASON


# ---------------------------------------------------------------- JSON, report, plot


def test_to_json_is_strict_json():
    """Every number finite or null, intervals as lists; also for no votes and for a diverging fit."""
    cases = [
        arena_stats(THREE, bootstrap=30),
        arena_stats([], bootstrap=30),
        arena_stats(votes("A", "B", a=5, tie=1), bootstrap=30, prior=0),
        arena_stats(votes("A", "B", tie=2), bootstrap=0),
    ]
    for stats in cases:
        text = json.dumps(stats.to_json(), allow_nan=False)
        assert json.loads(text) == stats.to_json()
    out = cases[0].to_json()
    assert set(out) == {"totals", "models", "pairs", "design", "checks", "method"}
    assert out["models"][0]["model"] == "A"
    assert isinstance(out["models"][0]["rating_interval"], list)
    assert out["design"]["source"] == "votes"
    assert cases[1].to_json()["models"] == []


def test_format_stats():
    stats = arena_stats([*THREE, vote("A", "B", "a", "ann")], bootstrap=20)
    text = format_stats(stats)
    for name in ("A", "B", "C"):
        assert name in text
    assert "4 voters" not in text and "2 voters" in text  # ann and the anonymous voter
    assert "`A` leads `B` at 70% of decisive votes (10 decisive votes so far)" in text
    # the ranking table's rows: "   1  A  1102 [..]  13  3 ..."
    ranked = re.findall(r"^\s+(\d)\s+(\w)\s+\d+ \[", text, flags=re.MULTILINE)
    assert ranked == [("1", "A"), ("2", "B"), ("3", "C")]
    assert format_stats(arena_stats([])) == "no votes yet\n"


def test_plot_stats_writes_a_png(tmp_path: Path):
    png = b"\x89PNG\r\n\x1a\n"
    written = plot_stats(arena_stats(THREE, bootstrap=20), tmp_path / "arena.png")
    assert written == tmp_path / "arena.png"
    assert written.read_bytes()[:8] == png and written.stat().st_size > 1000
    empty = plot_stats(arena_stats([]), tmp_path / "none" / "arena.png")
    assert empty.read_bytes()[:8] == png


# ---------------------------------------------------------------- checks on the voters


def test_voter_checks_flag_a_side_habit_and_a_taste_for_length():
    # 14 of 16 decisive votes for the left reply: Wilson 14/16 is (0.640, 0.965), which excludes 50%.
    # The left reply is also the longer one in every vote ("reply of long" vs "reply of B"), so the
    # longer reply won the same 14 of 16; the tie counts in neither.
    left_habit = votes("long", "B", a=14, b=2, tie=1)
    stats = arena_stats(left_habit, bootstrap=0)
    left, longer = stats.checks
    assert (left.name, left.votes, left.share) == ("left_reply", 16, 14 / 16)
    assert left.interval == pytest.approx((0.640, 0.965), abs=1e-3) and left.flagged
    assert (longer.name, longer.votes, longer.share, longer.flagged) == ("longer_reply", 16, 14 / 16, True)
    assert stats.model("long").mean_reply_chars == len("reply of long")
    report = format_stats(stats)
    assert "the left reply (A) won 88%" in report and "reward length" in report
    shorter = arena_stats(votes("long", "B", a=2, b=14), bootstrap=0)  # the shorter reply won 14 of 16
    assert "reward brevity" in format_stats(shorter) and "write shorter" in format_stats(shorter)

    # Sides balanced, replies of equal length: nothing to flag, and no votes to count for length.
    fair = [*votes("A", "B", a=5, b=3), *votes("B", "A", a=3, b=5)]
    left, longer = arena_stats(fair, bootstrap=0).checks
    assert left.share == 0.5 and not left.flagged
    assert (longer.votes, longer.share, longer.interval, longer.flagged) == (0, None, None, False)


def test_no_vote_count_is_promised_from_a_handful_of_votes():
    # One vote gives a rate of 100%, which would "need" 4 decisive votes: too few to go on.
    design = arena_stats(votes("A", "B", a=1), bootstrap=0).design
    assert (design.p, design.source, design.decisive_needed, design.further_votes) == (
        1.0,
        "votes",
        None,
        None,
    )
    assert "too few" in (design.reason or "")
    report = format_stats(arena_stats(votes("A", "B", a=1), bootstrap=0))
    assert "Top two, `A` and `B`: 1 decisive votes are too few" in report and "level" not in report


def test_odd_model_names_are_shown_as_text_in_the_terminal_and_the_plot(tmp_path):
    # "$...$" would be matplotlib mathtext (and "\bogus" a parse error); an escape would clear a terminal
    odd = votes("run$\\bogus$", "x\x1b[2Jy\nz", a=3, b=1)
    stats = arena_stats(odd, bootstrap=0)
    report = format_stats(stats)
    assert "\x1b" not in report and "x\\x1b[2Jy\\nz" in report
    picture = plot_stats(stats, tmp_path / "odd.png")
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
