"""Steps with a NaN or infinite loss or gradient are skipped, named and counted; a model with non-finite
weights is never saved.

One optimiser step may span several micro-batches (gradient accumulation) and processes (DDP). The guard
sees every training micro-batch's loss and example ids (:meth:`NonFiniteGuard.observe`); just before the
optimiser step it checks the gradients -- each value, and the norm the Trainer clips by
(:meth:`NonFiniteGuard.observe_grad_norm`): gradients that are each finite but whose norm overflows to inf
are scaled by 0 by the clipping, so the step would change nothing -- and every process agrees on one
decision (an all-reduce), so no rank steps while another skips. A skipped step leaves the weights and the
optimiser's state (moments, step count) exactly as they were; it still counts as a step for ``max_steps``
and the learning-rate schedule, so both keep their meaning. After ``max_nonfinite_steps`` skipped steps
in a row, training stops with :class:`NonFiniteTrainingError` and nothing is saved as final; so does a run
that reaches its last step with every one of its steps skipped (a run shorter than
``max_nonfinite_steps``), which would otherwise end "finished" with the weights it started from.

With fp16 and a gradient scaler, infinite gradients are the scaler's normal business (it skips the step
and lowers the scale), so there only a non-finite *loss* counts. Under DeepSpeed, DeepSpeed owns the
optimiser step: the guard counts, names and stops, but cannot skip a step.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from prefkit.errors import PrefkitError

logger = logging.getLogger(__name__)

# How many example ids a message lists before it says "and N more".
SHOWN_IDS = 20


class NonFiniteTrainingError(PrefkitError):
    """Too many optimiser steps in a row had a NaN or infinite loss or gradient."""


class NonFiniteWeightsError(PrefkitError):
    """The weights about to be saved hold NaN or infinite values."""


def describe_ids(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:SHOWN_IDS])
    return shown + (f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else "")


def gradients_finite(parameters: Iterable[torch.nn.Parameter]) -> bool:
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return True
    # The largest magnitude: NaN and inf propagate, and unlike a 2-norm it cannot overflow on finite values.
    return bool(torch.isfinite(torch.nn.utils.get_total_norm(grads, norm_type=float("inf"))))


def nonfinite_parameters(model: torch.nn.Module) -> list[str]:
    """Names of the trainable parameters holding a NaN or inf (the frozen ones never change)."""
    return [n for n, p in model.named_parameters() if p.requires_grad and not torch.isfinite(p).all()]


class NonFiniteGuard:
    """The per-step bookkeeping; the trainer feeds it, a callback asks it before each optimiser step."""

    def __init__(
        self,
        max_in_row: int,
        *,
        any_process: Callable[[bool], bool],
        gather_ids: Callable[[list[str]], list[str]],
        is_main: bool = True,
    ) -> None:
        self.max_in_row = max_in_row
        self._any_process = any_process  # True on every process if it is True on any
        self._gather_ids = gather_ids  # every process's ids, in rank order
        self._is_main = is_main  # only the main process logs
        self.steps = 0  # optimiser steps decided in this run
        self.skipped = 0  # steps skipped in this run
        self.in_row = 0
        self._window = [0, 0]  # optimiser steps and skipped steps since the last log record
        self.skip_this_step = False
        self._loss_finite: torch.Tensor | None = None  # on the device, read once per step
        self._grad_norm: float | None = None  # the Trainer's pre-clipping norm of this step, if it gave one
        self._ids: list[str] = []

    def observe(self, loss: torch.Tensor, example_ids: Sequence[str] | None) -> None:
        """One training micro-batch's loss and the ids of its examples."""
        finite = torch.isfinite(loss.detach()).all()
        self._loss_finite = finite if self._loss_finite is None else self._loss_finite & finite
        self._ids += list(example_ids or [])

    def observe_grad_norm(self, norm: torch.Tensor | float | None) -> None:
        """The gradient norm of this step as the Trainer computed it, before clipping by it."""
        self._grad_norm = None if norm is None else float(norm)

    def decide(
        self,
        step: int,
        parameters: Iterable[torch.nn.Parameter],
        *,
        check_gradients: bool,
        last: bool = False,
    ) -> bool:
        """Whether optimiser step ``step`` (1-based) must be skipped; raises after too many in a row, or at
        the ``last`` step of a run whose every step was skipped. Called once per optimiser step on every
        process."""
        loss_finite = True if self._loss_finite is None else bool(self._loss_finite)
        grads_finite = gradients_finite(parameters) if check_gradients else True
        norm = self._grad_norm
        # Finite gradients can have an infinite 2-norm (each near 1e30, say: pref_beta 1e30). Clipping divides
        # by that norm, so the update is all zeros: a step that changes nothing, not a step that trained.
        norm_finite = not check_gradients or norm is None or math.isfinite(norm)
        ids, self._ids, self._loss_finite, self._grad_norm = self._ids, [], None, None
        self.skip_this_step = self._any_process(not (loss_finite and grads_finite and norm_finite))
        self.steps += 1
        self._window[0] += 1
        if not self.skip_this_step:
            self.in_row = 0
            return False
        self._window[1] += 1
        everyone = describe_ids(self._gather_ids(ids)) or "(not recorded)"
        self.skipped += 1
        self.in_row += 1
        parts = [("loss", loss_finite), ("gradient", grads_finite)]
        if grads_finite:  # NaN/inf values make the norm non-finite too: name only the cause
            parts.append((f"gradient norm ({norm})", norm_finite))
        what = " and ".join(n for n, ok in parts if not ok)
        if self._is_main:
            logger.warning(
                "step %d: non-finite %s; the step was skipped (weights and optimiser state unchanged). "
                "Its examples: %s",
                step,
                what or "loss on another process",
                everyone,
            )
        if self.in_row >= self.max_in_row:
            why = (
                f"the last {self.in_row} optimiser steps in a row had a NaN or infinite loss or gradient "
                f"(max_nonfinite_steps: {self.max_in_row})"
            )
        elif last and self.in_row == self.steps:
            # Fewer steps than max_nonfinite_steps, all skipped: the weights are those the run started from.
            why = (
                f"all {self.steps} optimiser steps of this run, up to its last, had a NaN or infinite loss "
                "or gradient and none changed the weights"
            )
        else:
            return True
        raise NonFiniteTrainingError(
            f"training stopped at step {step}: {why}, so the model is not learning. Nothing was saved as "
            "final; resuming starts from the last checkpoint. Lower learning_rate, check pref_beta and "
            f"pref_ftx, or look at the last step's examples: {everyone}"
        )

    def end_log_window(self) -> bool:
        """Whether every step since the last log record was skipped; starts a new window. (The Trainer
        replaces a non-finite step's loss by the window's mean so far, which for a window of skipped
        steps is 0.0: a broken run would log ``loss: 0.0``.)"""
        steps, skipped = self._window
        self._window = [0, 0]
        return steps > 0 and skipped == steps

    def wrap_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Make ``optimizer.step`` a no-op on a skipped step (an instance attribute: the optimizer's
        state_dict holds only its state and parameter groups, so checkpoints are unchanged)."""
        original = optimizer.step

        @functools.wraps(original)
        def step(*args: Any, **kwargs: Any) -> Any:
            if self.skip_this_step:
                return None
            return original(*args, **kwargs)

        optimizer.step = step  # type: ignore[method-assign]
