"""Atomic checkpoints for transformers' Trainer: the one place prefkit overrides private Trainer methods.

``Trainer._save_checkpoint`` writes ``checkpoint-N`` straight into ``output_dir`` and then rotates
(deletes) *every* ``checkpoint-*`` folder beyond ``save_total_limit``, a user's included. This mixin
makes it write into ``output_dir/.staging`` instead -- by answering ``Trainer._get_output_dir``, which
``_save_checkpoint`` asks for its run folder -- then renames the finished checkpoint into place (so a
checkpoint under its real name is always complete), lists it in the run marker, and rotates only the
checkpoints the run folder lists as its own.

What it relies on in transformers (pinned by tests/test_checkpointing.py, so an upgrade that changes it
fails there rather than in a user's run): ``_save_checkpoint(model, trial)`` takes its run folder from
``self._get_output_dir(trial)`` and writes everything into ``<that>/checkpoint-<global_step>``, and
its own rotation only looks inside that folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from prefkit.train.run.folder import STAGING_DIR, RunFolder, crash_point


class AtomicCheckpoints:
    """Mix into a ``transformers.Trainer`` subclass (before Trainer). ``run_folder`` must be set to the
    run's :class:`RunFolder` on the process that saves (the main one): it lists each checkpoint."""

    run_folder: RunFolder | None = None
    _staging: Path | None = None

    def _get_output_dir(self, trial: Any) -> str:
        if self._staging is not None:
            return str(self._staging)
        return super()._get_output_dir(trial)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        run_dir = Path(super()._get_output_dir(trial))
        staging = run_dir / STAGING_DIR
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if self.args.should_save and self.run_folder is None:
            raise RuntimeError("AtomicCheckpoints: set run_folder on the saving process before training")
        folder = self.run_folder if self.args.should_save else None
        if folder is not None:
            folder.claim_name(STAGING_DIR).mkdir(exist_ok=True)
            shutil.rmtree(staging / name, ignore_errors=True)  # what a killed save of this step left
        self.accelerator.wait_for_everyone()
        self._staging = staging
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging = None
        self.accelerator.wait_for_everyone()  # every rank has written its RNG state
        if folder is not None:
            crash_point("checkpoint-staged", self.state.global_step)
            if folder.owns(name):  # a step saved again after resuming from an earlier checkpoint
                folder.remove(name)
            final = folder.claim_name(name)  # listed last: the list is in the order of saving
            (staging / name).replace(final)
            crash_point("checkpoint-saved", self.state.global_step)
            self._point_best_at_final_folder(run_dir, final)
            best = self.state.best_model_checkpoint
            folder.rotate(self.args.save_total_limit, Path(best) if best else None)
        self.accelerator.wait_for_everyone()

    def _point_best_at_final_folder(self, run_dir: Path, final: Path) -> None:
        """The Trainer records the best checkpoint under the folder it saved into (the staging one)."""
        state = self.state
        best = state.best_model_checkpoint
        if best and Path(best).parent == run_dir / STAGING_DIR:
            state.best_model_checkpoint = str(run_dir / Path(best).name)
            state.save_to_json(str(final / "trainer_state.json"))
