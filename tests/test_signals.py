"""SIGINT/SIGTERM: the first saves a checkpoint at the end of the step and stops with 130/143 and how to
resume; a second SIGINT stops at once. Real signals, sent to this process."""

from __future__ import annotations

import os
import signal

import pytest
from test_train import config
from transformers import TrainerCallback

from prefkit.errors import TrainingInterrupted
from prefkit.train.recipe import train
from prefkit.train.run.folder import checkpoints
from prefkit.train.run.metrics import read_metrics
from prefkit.train.run.signals import GracefulStop


def test_first_signal_sets_the_flag_second_sigint_raises_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGINT)
    stop = GracefulStop()
    with stop.handling():
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


class SignalAt(TrainerCallback):
    """Sends ``signum`` to this process in the middle of step ``step`` (as a user's Ctrl-C would)."""

    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum = step, signum

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step + 1 == self.step:
            os.kill(os.getpid(), self.signum)


@pytest.mark.slow
def test_a_signal_saves_a_checkpoint_and_the_same_command_resumes(tmp_path, tiny_model_dir):
    cfg = config(tmp_path, tiny_model_dir, "max_steps=6", "save_steps=100", "plot_loss=false")
    with pytest.raises(TrainingInterrupted) as err:
        train(cfg, callbacks=[SignalAt(3, signal.SIGTERM)])
    assert err.value.exit_code == 143  # 128 + 15, as a shell reports it; SIGINT gives 130
    assert "after step 3, with checkpoint-3 saved" in str(err.value)
    assert "run the same command again to resume" in str(err.value)
    out = tmp_path / "run"
    assert [p.name for p in checkpoints(out)] == ["checkpoint-3"]
    result = train(cfg)
    assert result.resumed_from == out / "checkpoint-3" and result.global_step == 6
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r] == [1, 2, 3, 4, 5, 6]
