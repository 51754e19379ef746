"""Sweeps: a grid of settings over one base config, each combination a normal prefkit run, every run
evaluated on the same held-out pairs, and a leaderboard ranked by a held-out metric that a reward-hacking
run cannot top. Local (one process, or K worker processes) or on a Ray cluster. See docs/sweeps.md.

May import: evaluate, train and every layer below."""

from prefkit.sweep.ranking import DEFAULT_METRIC
from prefkit.sweep.run import SweepResult, run_sweep
from prefkit.sweep.spec import EvalSettings, SweepError

__all__ = ["DEFAULT_METRIC", "EvalSettings", "SweepError", "SweepResult", "run_sweep"]
