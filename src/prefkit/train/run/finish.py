"""The end of a run, made so that a kill at any moment leaves a run the next start can finish.

The final model is saved into ``.staging/final`` first; then the marker says ``saving-final`` and lists
its files; then each file is moved into place (one atomic rename each); then the plots; then
``finished``. The next ``prefkit train`` of a run killed on the way finishes it without training again:
from ``.staging/final`` (:func:`finish_saved_run`), or -- killed before the final save was complete --
from the checkpoint transformers saved at the last step (:func:`finish_from_checkpoint`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefkit.train.run.folder import FINAL_DIR, STAGING_DIR, RunFolder, crash_point
from prefkit.train.run.metrics import METRICS_FILE, plot_names, plot_run, truncate_metrics
from prefkit.train.run.resume import final_model_source, model_files
from prefkit.train.run.start import StartPlan

if TYPE_CHECKING:
    from prefkit.config import Config

logger = logging.getLogger(__name__)


def write_plots(folder: RunFolder, config: Config) -> None:
    if config.plot_loss:
        preference = config.stage == "dpo"
        for name in plot_names(preference):
            folder.claim_name(name)
        plot_run(folder.path, preference=preference)


def finish_saved_run(config: Config, plan: StartPlan, output_dir: Path) -> int:
    """The run was killed after its final model was saved (marker status saving-final, the files all
    there): move the last files into place, plot, mark it finished. No model is loaded."""
    from accelerate import PartialState

    state = PartialState()
    assert plan.marker is not None
    step = int(plan.marker.fields["global_step"])
    if state.is_main_process:
        folder = RunFolder(output_dir, plan.marker)
        folder.complete_final()
        crash_point("final-moved")
        write_plots(folder, config)
        folder.finish(global_step=step, world_size=state.num_processes)
    state.wait_for_everyone()
    logger.info("the run in %s was stopped while saving its final model; it is finished now", output_dir)
    return step


def finish_from_checkpoint(config: Config, plan: StartPlan, output_dir: Path, step: int) -> None:
    """The run's newest checkpoint is at its last step: training is over, only the final model was not
    in place (killed after training). Its model files are the final model; no model is loaded."""
    import shutil

    from accelerate import PartialState

    state = PartialState()
    assert plan.resume_from is not None
    load_best = bool(config.training_arguments.get("load_best_model_at_end"))
    source = final_model_source(plan.resume_from, load_best)
    if state.is_main_process:
        folder = RunFolder.claim(output_dir, plan.marker, clear=False, resume=True)
        truncate_metrics(folder.claim_name(METRICS_FILE), step)
        staging = folder.final_staging
        folder.claim_name(STAGING_DIR)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for item in model_files(source):
            if item.is_dir():
                shutil.copytree(item, staging / item.name)
            else:
                shutil.copy2(item, staging / item.name)
        folder.begin_final(sorted(p.name for p in staging.iterdir()), step)
        folder.complete_final()
        write_plots(folder, config)
        folder.finish(global_step=step, resumed_from=str(plan.resume_from), world_size=state.num_processes)
    state.wait_for_everyone()
    logger.info(
        "training had finished in %s (%s is its last step); the final model is in place now",
        output_dir,
        plan.resume_from.name,
    )


def save_final(trainer: Any, folder: RunFolder | None, state: Any, output_dir: Path) -> None:
    """Save the final model into the staging folder, then (marker: saving-final) move it into place --
    so a kill at any point leaves either a resumable run or one the next start only has to finish.
    Every process calls save_model with the same folder (DeepSpeed and FSDP gather collectively);
    the main one (``folder``) writes and moves."""
    import shutil

    staging = output_dir / STAGING_DIR / FINAL_DIR
    if folder is not None:
        folder.claim_name(STAGING_DIR)
        shutil.rmtree(staging, ignore_errors=True)
    state.wait_for_everyone()
    trainer.save_model(str(staging))
    state.wait_for_everyone()
    if folder is not None:
        crash_point("final-staged")
        folder.begin_final(sorted(p.name for p in staging.iterdir()), trainer.state.global_step)
        crash_point("final-marked")
        folder.complete_final()
        crash_point("final-moved")
