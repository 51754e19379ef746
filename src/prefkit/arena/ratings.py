"""Bradley–Terry ratings of the arena's models, and their 95% intervals (see :mod:`prefkit.arena.stats`
for what they mean): the fit, its Laplace interval, the bootstrap, on the Elo scale."""

from __future__ import annotations

import math
import warnings

import numpy as np

Z95 = 1.959963984540054  # two-sided 5% level: the standard normal's 97.5th percentile
PRIOR = 0.01  # precision of the Gaussian prior on each strength θ (see prefkit.arena.stats)
ELO_SCALE = 400 / math.log(10)  # θ to Elo points: a difference of 400 points is odds of 10 to 1
ELO_BASE = 1000.0

Interval = tuple[float, float]


def fit_ratings(
    n: int,
    a_index: np.ndarray,
    b_index: np.ndarray,
    a_score: np.ndarray,
    prior: float,
    bootstrap: int,
    seed: int,
) -> tuple[np.ndarray, list[Interval | None]]:
    """The strengths θ of ``n`` models from votes given as (a's index, b's index, a's score), and each
    model's 95% rating interval on the Elo scale: the wider, at each end, of the Laplace interval and a
    ``bootstrap``-resample percentile interval (none with ``bootstrap`` 0)."""
    wins = _score_matrix(n, a_index, b_index, a_score)
    theta = _fit(wins, prior)
    low, high = (ELO_BASE + ELO_SCALE * t for t in _laplace_interval(wins, theta, prior))
    if bootstrap and len(a_score):
        rng = np.random.default_rng(seed)
        resampled = np.empty((bootstrap, n))
        for r in range(bootstrap):
            pick = rng.integers(0, len(a_score), size=len(a_score))
            scores = _score_matrix(n, a_index[pick], b_index[pick], a_score[pick])
            resampled[r] = _fit(scores, prior, start=theta)  # the full fit is a close start: fewer steps
            # A model this resample left out has no rating in it (the fit would just say 1000).
            present = np.zeros(n, dtype=bool)
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
    return theta, intervals


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
