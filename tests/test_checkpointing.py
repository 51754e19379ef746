"""train.run.checkpoints relies on two private behaviours of transformers' Trainer; this pins them, so an
upgrade that changes either fails here first. Then the mixin itself: staged, listed, rotated."""

from __future__ import annotations

import json
import os
from pathlib import Path

from transformers import AutoModelForCausalLM, Trainer, TrainingArguments


def _trainer(cls: type, tiny_model_dir: Path, out: Path, **args) -> Trainer:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    arguments = TrainingArguments(output_dir=str(out), use_cpu=True, report_to="none", **args)
    trainer = cls(model=model, args=arguments)
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    return trainer


def test_save_checkpoint_writes_into_get_output_dir_and_rotates_only_there(tmp_path, tiny_model_dir):
    elsewhere = tmp_path / "elsewhere"

    class Redirected(Trainer):
        def _get_output_dir(self, trial):
            return str(elsewhere)

    out = tmp_path / "out"
    (out / "checkpoint-1").mkdir(parents=True)  # would be the oldest checkpoint if rotation looked here
    trainer = _trainer(Redirected, tiny_model_dir, out, save_total_limit=1)
    for step in (3, 5):
        trainer.state.global_step = step
        trainer._save_checkpoint(trainer.model, trial=None)
    assert sorted(os.listdir(elsewhere)) == ["checkpoint-5"]  # rotated, inside the folder it was given
    saved = set(os.listdir(elsewhere / "checkpoint-5"))
    assert {"trainer_state.json", "optimizer.pt", "scheduler.pt", "model.safetensors"} <= saved
    assert json.loads((elsewhere / "checkpoint-5" / "trainer_state.json").read_text())["global_step"] == 5
    assert os.listdir(out) == ["checkpoint-1"]


def test_atomic_checkpoints_stage_list_and_rotate_their_own(tmp_path, tiny_model_dir):
    from prefkit.train.run.checkpoints import AtomicCheckpoints
    from prefkit.train.run.folder import RunFolder, read_marker

    class Atomic(AtomicCheckpoints, Trainer):
        pass

    out = tmp_path / "run"
    folder = RunFolder.claim(out, None, clear=False, resume=False)
    (out / "notes").mkdir()  # the user's, inside the run folder: never touched
    trainer = _trainer(Atomic, tiny_model_dir, out, save_total_limit=2)
    trainer.run_folder = folder
    for step in (2, 4, 6):
        trainer.state.global_step = step
        trainer._save_checkpoint(trainer.model, trial=None)
    kept = [".staging", "checkpoint-4", "checkpoint-6", "notes", "prefkit_run.json"]
    assert sorted(os.listdir(out)) == kept
    assert os.listdir(out / ".staging") == []  # each checkpoint was renamed out of it whole
    assert read_marker(out).files == [".staging", "checkpoint-4", "checkpoint-6"]
