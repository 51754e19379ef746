"""The arena's statistics for people: a plain-text report for the terminal and one PNG. What each figure
means is in :mod:`prefkit.arena.stats`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefkit.arena.design import EVEN_REASON, Design
from prefkit.arena.stats import ArenaStats, Interval

NO_VOTES = "no votes yet"
PLOT_FORMATS = (".png", ".svg", ".pdf")


def shown(name: str) -> str:
    """A model name for the terminal: control characters (an escape that clears the screen, a newline
    that forges a row) written as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


def _percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _rate(rate: float | None, interval: Interval | None) -> str:
    if rate is None:
        return "-"
    if interval is None:
        return _percent(rate)
    return f"{_percent(rate)} [{_percent(interval[0])}, {_percent(interval[1])}]"


def _rating(rating: float, interval: Interval | None) -> str:
    if interval is None:
        return f"{rating:.0f}"
    return f"{rating:.0f} [{interval[0]:.0f}, {interval[1]:.0f}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> list[str]:
    """Columns padded to their widest cell; numbers (``right``) aligned on the right."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = []
    for row in (header, *rows):
        cells = [
            cell.rjust(width) if r else cell.ljust(width)
            for cell, width, r in zip(row, widths, right, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


def format_stats(stats: ArenaStats) -> str:
    """The report: totals, a table of models by rank, a table of pairs, and how many votes would settle
    the lead."""
    t = stats.totals
    if t.votes == 0:
        return NO_VOTES + "\n"
    lines = [
        f"{_plural(t.votes, 'vote')} ({t.decisive} decisive, {_plural(t.ties, 'tie')}, {t.both_bad} both bad)"
        f" from {_plural(t.voters, 'voter')} on {_plural(t.models, 'model')}"
    ]
    if t.same_model:
        lines.append(
            f"({_plural(t.same_model, 'vote')} between two replies of one model: counted, not rated)"
        )
    if not stats.models:
        return "\n".join([*lines, "", "no votes between two different models yet"]) + "\n"

    interval_note = (
        f"95% intervals: the wider of {stats.bootstrap} bootstrap resamples and the fit's own"
        if stats.bootstrap
        else "95% intervals from the fit (Laplace)"
    )
    lines += ["", f"Ratings (Bradley–Terry, Elo scale, 1000 = average; {interval_note}):"]
    lines += _table(
        ["rank", "model", "rating [95%]", "W", "L", "T", "bad", "win rate [95%]"],
        [
            [
                str(m.rank),
                shown(m.model),
                _rating(m.rating, m.rating_interval),
                str(m.wins),
                str(m.losses),
                str(m.ties),
                str(m.both_bad),
                _rate(m.win_rate, m.win_rate_interval),
            ]
            for m in stats.models
        ],
        [True, False, True, True, True, True, True, True],
    )

    lines += ["", "Pairs (first's win rate among their decisive votes):"]
    lines += _table(
        ["first vs second", "n", "W/L/T/bad", "win rate [95%]", "separated"],
        [
            [
                f"{shown(p.first)} vs {shown(p.second)}",
                str(p.battles),
                f"{p.first_wins}/{p.second_wins}/{p.ties}/{p.both_bad}",
                _rate(p.first_win_rate, p.first_win_rate_interval),
                "yes" if p.separated else "no",
            ]
            for p in stats.pairs
        ],
        [False, True, True, True, False],
    )
    lines += ["", _design_text(stats.design)]
    lines += ["", *_checks_text(stats)]
    return "\n".join(lines) + "\n"


CHECK_WORDS = {"left_reply": "the left reply (A)", "longer_reply": "the longer reply"}


def _checks_text(stats: ArenaStats) -> list[str]:
    """One line per check on the voters, and what a flagged one means."""
    lines = ["Checks on the voters (50% when votes follow content alone):"]
    for c in stats.checks:
        if c.share is None or c.interval is None:
            lines.append(f"  {CHECK_WORDS[c.name]} won: no decisive votes to count")
            continue
        flag = "  <- away from 50%" if c.flagged else ""
        lines.append(
            f"  {CHECK_WORDS[c.name]} won {_rate(c.share, c.interval)} of {c.votes} decisive votes{flag}"
        )
    longer = next(
        (c for c in stats.checks if c.name == "longer_reply" and c.flagged and c.share is not None), None
    )
    if longer is not None:
        lengths = ", ".join(f"{shown(m.model)} {m.mean_reply_chars:.0f}" for m in stats.models)
        more, verb = ("length", "longer") if longer.share > 0.5 else ("brevity", "shorter")
        lines.append(
            f"  The votes reward {more}; mean reply characters: {lengths}. A model trained on these votes "
            f"can learn to write {verb} rather than better."
        )
    if any(c.flagged and c.name == "left_reply" for c in stats.checks):
        lines.append("  The voters favour one side; sides are random per battle, so the ratings stay fair.")
    return lines


def _design_text(d: Design) -> str:
    if d.leader is None or d.runner_up is None or d.p is None:
        return f"Top two: {d.reason}."
    leader, runner_up = f"`{shown(d.leader)}`", f"`{shown(d.runner_up)}`"
    if d.decisive_needed is None and d.reason != EVEN_REASON:  # too few votes to take a rate from
        return f"Top two, {leader} and {runner_up}: {d.reason}."
    if d.source == "votes":
        so_far = f"{_plural(d.decisive, 'decisive vote')} so far"
        if d.decisive_needed is None:
            return (
                f"{leader} and {runner_up} are level at 50% of their decisive votes ({so_far}): {d.reason}."
            )
        if d.p > 0.5:
            lead = f"{leader} leads {runner_up} at {_percent(d.p)} of decisive votes ({so_far})"
        else:  # rated higher through the other opponents, behind head to head
            lead = (
                f"{leader} is rated above {runner_up} but wins only {_percent(d.p)} of their decisive votes"
                f" ({so_far})"
            )
        rate = "the current tie rate"
    else:
        met = "have had no decisive vote between them" if d.battles else "have not met"
        lead = (
            f"{leader} and {runner_up} {met}; their ratings give {leader} {_percent(d.p)} against {runner_up}"
        )
        if d.decisive_needed is None:
            return f"{lead}: {d.reason}."
        rate = "their tie rate" if d.battles else "the overall tie rate"
    if d.separated:
        return f"{lead}: already separated (the 95% interval of that rate excludes 50%)."
    test = f"a 5%-level test has 80% power after about {_plural(d.decisive_needed or 0, 'decisive vote')}"
    if d.further_votes:
        return f"{lead}; {test}, about {d.further_votes} more votes at {rate}."
    return (
        f"{lead}; {test}, which they have had ({_plural(d.battles, 'vote')}), yet they are not separated:"
        " the true rate is likely nearer 50%."
    )


def plot_stats(stats: ArenaStats, path: Path) -> Path:
    """One PNG at ``path``: left, each model's rating with its 95% interval, best on top; right, the
    pairwise win-rate matrix (row's win rate against column among their decisive votes, the number of
    decisive votes in each cell, blank where there are none). No votes: a figure that says so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    path = Path(path)
    if path.suffix.lower() not in PLOT_FORMATS:
        raise ValueError(f"a plot is one of {', '.join(PLOT_FORMATS)}, not '{path.suffix or path.name}'")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Model names are the user's text: "a$b$" must not become mathtext (or a parse error).
    with matplotlib.rc_context({"text.parse_math": False}):
        return _plot(stats, path, plt, np)


def _plot(stats: ArenaStats, path: Path, plt: Any, np: Any) -> Path:
    models = stats.models
    if not models:
        fig, ax = plt.subplots(figsize=(5.5, 2.5))
        ax.text(0.5, 0.5, NO_VOTES, ha="center", va="center", fontsize=14, color="grey")
        ax.set_axis_off()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    names = [m.model for m in models]  # by rank
    n = len(names)
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(11, max(3.8, 1.5 + 0.45 * n)), gridspec_kw={"width_ratios": [1, 1.1]}
    )

    ys = list(range(n))[::-1]  # rank 1 at the top
    ratings = [m.rating for m in models]
    # An interval need not contain its estimate (a lopsided bootstrap); matplotlib refuses negative bars.
    below = [max(0.0, m.rating - m.rating_interval[0]) if m.rating_interval else 0.0 for m in models]
    above = [max(0.0, m.rating_interval[1] - m.rating) if m.rating_interval else 0.0 for m in models]
    left.errorbar(ratings, ys, xerr=[below, above], fmt="o", capsize=4)
    left.axvline(1000, linestyle="--", color="grey", linewidth=1)
    left.set_yticks(ys, [f"{m.rank}. {shown(m.model)}" for m in models])
    left.set_xlabel("rating (Elo scale), 95% interval" if stats.bootstrap else "rating (Elo scale)")
    left.set_title("ratings")
    left.grid(alpha=0.3, axis="x")

    index = {name: i for i, name in enumerate(names)}
    rates = np.full((n, n), np.nan)
    counts = np.zeros((n, n), dtype=int)
    for p in stats.pairs:
        i, j = index[p.first], index[p.second]
        counts[i, j] = counts[j, i] = p.decisive
        if p.first_win_rate is not None:
            rates[i, j], rates[j, i] = p.first_win_rate, 1 - p.first_win_rate
    image = right.imshow(np.ma.masked_invalid(rates), cmap="RdBu", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if math.isfinite(rates[i, j]):
                dark = abs(rates[i, j] - 0.5) > 0.3
                right.text(
                    j,
                    i,
                    f"{100 * rates[i, j]:.0f}%\nn={counts[i, j]}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if dark else "black",
                )
    right.set_xticks(range(n), [shown(x) for x in names], rotation=45, ha="right")
    right.set_yticks(range(n), [shown(x) for x in names])
    right.set_xlabel("against")
    right.set_title("row's win rate against column\n(decisive votes)")
    fig.colorbar(image, ax=right, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
