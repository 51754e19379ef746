"""Training: :func:`train` takes a Config to a finished run folder (:mod:`~prefkit.train.recipe` reads top
to bottom as plan -> load -> prepare -> train -> finish). Here live the trainer (transformers' Trainer
with prefkit's losses), the loss registry, the reference log-prob cache, the non-finite step guard,
generation during evaluation, multi-process launch, and -- in :mod:`prefkit.train.run` -- the run
folder's whole lifecycle.

May import: config, data, model, infer, score."""

from prefkit.train.recipe import train

__all__ = ["train"]
