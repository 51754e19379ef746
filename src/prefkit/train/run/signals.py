"""SIGINT and SIGTERM during training: finish the current step, save a checkpoint, stop cleanly.

The first signal only sets a flag. At the end of the step in progress, :class:`GracefulStop` asks the
Trainer to save a checkpoint and stop; ``prefkit.train.recipe`` then raises
:class:`prefkit.errors.TrainingInterrupted` (exit code 130 for SIGINT, 143 for SIGTERM) saying how to
resume -- the same command again. A second signal does not wait: SIGINT raises KeyboardInterrupt at
once, SIGTERM ends the process the default way. With several processes (DDP) the flag is shared at
each step end, so every rank stops at the same step and they save one checkpoint together.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

from transformers import TrainerCallback

logger = logging.getLogger(__name__)

HANDLED = (signal.SIGINT, signal.SIGTERM)
# Set by the first signal of a run: anything that would signal this process to stop (a sweep worker's
# watch on its sweep) must not send a second signal, which would cut the checkpoint save short.
STOP_REQUESTED = threading.Event()


class GracefulStop(TrainerCallback):
    """Set ``signum`` (from a signal handler, see :meth:`handling`) and training stops after the current
    step with a checkpoint saved."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.stopped_at: int | None = None  # the step whose checkpoint was saved on the way out

    def request(self, signum: int) -> None:
        self.signum = signum

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        signum = _agreed(self.signum or 0)
        if signum:
            self.signum = signum
            self.stopped_at = state.global_step
            control.should_save = True
            control.should_training_stop = True
        return control

    @contextlib.contextmanager
    def handling(self) -> Iterator[GracefulStop]:
        """Install the handlers for the block (main thread only: elsewhere Python cannot take signals,
        and a Ctrl-C keeps its default meaning)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def first(signum: int, frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            logger.warning(
                "%s: stopping after this step and saving a checkpoint (send it again to stop at once)", name
            )
            self.request(signum)
            STOP_REQUESTED.set()
            for s in HANDLED:
                signal.signal(s, second)

        def second(signum: int, frame: FrameType | None) -> None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

        previous = {s: signal.getsignal(s) for s in HANDLED}
        for s in HANDLED:
            signal.signal(s, first)
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def _agreed(signum: int) -> int:
    """The largest signal number any rank has seen (0: none) -- every rank must stop at the same step."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return signum
    import torch

    flag = torch.tensor([signum], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        flag = flag.cuda()
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item())
