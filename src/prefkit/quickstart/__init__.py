"""`prefkit quickstart`: a real model learns a preference on this machine, with before/after evidence
(:mod:`~prefkit.quickstart.recipe`) and its report (:mod:`~prefkit.quickstart.report`).

May import every layer below the sweep: train, evaluate, score, infer, model, data, config."""

from prefkit.quickstart.recipe import run_quickstart

__all__ = ["run_quickstart"]
