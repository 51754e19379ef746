"""One job of a sweep, wherever it runs (this process, a worker process, a Ray task): the base model's
evaluation, or one run -- trained (resumed if it was interrupted; skipped if it finished) with the
ordinary ``prefkit.train.recipe.train``, then evaluated on the held-out pairs with ``prefkit.evaluate``.

Everything a job needs is read from the sweep folder's ``sweep.json``, so ``python -m prefkit.sweep.jobs
SWEEP_DIR NAME`` runs the same job as the sweep itself would.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefkit.errors import USER_ERRORS, TrainingInterrupted
from prefkit.sweep.folder import EVALUATED, TRAINED, Attempt, baseline_done, run_status
from prefkit.sweep.spec import BASELINE, SweepSpec

if TYPE_CHECKING:
    from transformers import TrainerCallback

    from prefkit.config import Config

logger = logging.getLogger(__name__)


def _evaluate(
    spec: SweepSpec, sweep_dir: Path, config: Config, model: str, adapter: str | None, output_dir: Path
) -> None:
    from prefkit.evaluate.run import evaluate_model
    from prefkit.infer.sampling import SamplingSettings

    ev = spec.evaluation
    evaluate_model(
        model,
        [spec.heldout_path(sweep_dir)],
        adapter=adapter,
        output_dir=output_dir,
        max_samples=ev["max_samples"],
        generate_samples_n=ev["generate"],
        scorers=ev["scorers"],
        guard_limits=ev.get("guard_limits") or None,
        sampling=SamplingSettings(max_new_tokens=ev["max_new_tokens"]),
        template=config.template,
        cutoff_len=config.cutoff_len,
        # the base model in the precision the runs train and are evaluated in, so the guards compare like
        # with like
        dtype="bf16" if config.bf16 else "fp16" if config.fp16 else "fp32",
        batch_size=ev["batch_size"],
        force=True,  # only reached while eval.json (written last) is missing: the rest is a partial attempt
        progress=False,
    )


def evaluate_baseline(spec: SweepSpec, sweep_dir: Path) -> None:
    """The model every run starts from (the base model, with the base config's adapter if it names one),
    on the same held-out pairs: the reference the leaderboard's guards compare against."""
    from prefkit.train.recipe import model_path

    if baseline_done(sweep_dir):
        return
    config = spec.base_config()
    logger.info("sweep: evaluating the base model on the held-out pairs")
    _evaluate(spec, sweep_dir, config, model_path(config), config.adapter_name_or_path, sweep_dir / BASELINE)


def train_and_evaluate(
    spec: SweepSpec, sweep_dir: Path, name: str, callbacks: list[TrainerCallback] | None = None
) -> None:
    from prefkit.train.recipe import model_path, train

    config = spec.run_config(spec.run(name), sweep_dir)
    run_dir = sweep_dir / name
    status = run_status(run_dir)
    if status == EVALUATED:
        return
    if status != TRAINED:
        logger.info("sweep: training %s", name)
        train(config, callbacks=callbacks)
    logger.info("sweep: evaluating %s on the held-out pairs", name)
    if (run_dir / "adapter_config.json").is_file():
        _evaluate(spec, sweep_dir, config, model_path(config), str(run_dir), run_dir)
    else:  # full fine-tuning: the run folder is the model
        _evaluate(spec, sweep_dir, config, str(run_dir), None, run_dir)


def run_job(sweep_dir: Path, name: str, callbacks: list[TrainerCallback] | None = None) -> None:
    spec = SweepSpec.read(sweep_dir)
    if name == BASELINE:
        evaluate_baseline(spec, sweep_dir)
    else:
        train_and_evaluate(spec, sweep_dir, name, callbacks)


def _release_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def attempt_job(sweep_dir: Path, name: str, callbacks: list[TrainerCallback] | None = None) -> Attempt:
    """Run a job, turning any failure into an Attempt that says what went wrong (a user error's message,
    else the exception and where it was raised). An interruption (Ctrl-C, SIGTERM: the run saved a checkpoint
    and raised TrainingInterrupted; or a KeyboardInterrupt elsewhere) is not a failure: it stops the sweep."""
    started = time.perf_counter()
    try:
        run_job(sweep_dir, name, callbacks)
    except TrainingInterrupted:
        raise
    except USER_ERRORS as err:
        return Attempt(False, time.perf_counter() - started, str(err))
    except Exception as err:  # a run's crash must not end the sweep: it is recorded and the rest goes on
        logger.error("sweep: %s failed:\n%s", name, traceback.format_exc())
        return Attempt(False, time.perf_counter() - started, _describe(err))
    finally:
        _release_memory()
    return Attempt(True, time.perf_counter() - started)


def _describe(err: BaseException) -> str:
    frames = traceback.extract_tb(err.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(err).__name__}: {err}{where}"


def ray_job(sweep_dir: str, name: str, cwd: str) -> dict[str, Any]:
    """The body of one Ray task: the job in the sweep's working folder, its outcome as plain data."""
    _log_to_stderr()
    os.chdir(cwd)
    attempt = attempt_job(Path(sweep_dir), name)
    return {"ok": attempt.ok, "seconds": attempt.seconds, "error": attempt.error}


def _log_to_stderr() -> None:
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.INFO)


SWEEP_PID_ENV = "PREFKIT_SWEEP_PID"  # set by the sweep for its worker processes


def _stop_when_orphaned() -> None:
    """A worker whose sweep process died (killed) stops as if interrupted -- a checkpoint, then exit --
    rather than train on unwatched, where a rerun of the sweep would start a second trainer on its run.
    Only for workers a sweep started (it names itself in the environment), and never a second signal."""
    import threading

    from prefkit.train.run.signals import STOP_REQUESTED

    sweep = int(os.environ.get(SWEEP_PID_ENV, "0"))
    if sweep <= 0:
        return

    def watch() -> None:
        while os.getppid() == sweep:
            time.sleep(1.0)
        if not STOP_REQUESTED.is_set():
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="prefkit-orphan-watch", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m prefkit.sweep.jobs SWEEP_DIR NAME RESULT_FILE``: one job in its own process (``--parallel
    K``); its outcome is written to RESULT_FILE as JSON. Exit status 0 when it succeeded."""
    from prefkit.train.run.folder import write_json_atomic

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3:
        print("usage: python -m prefkit.sweep.jobs SWEEP_DIR NAME RESULT_FILE", file=sys.stderr)
        return 2
    _log_to_stderr()
    # The sweep holds SIGINT/SIGTERM back while it starts a worker, and a child inherits that mask.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    _stop_when_orphaned()
    try:
        attempt = attempt_job(Path(args[0]), args[1])
    except TrainingInterrupted as err:  # stopped by the sweep (or a signal): no result, the run resumes
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    write_json_atomic(Path(args[2]), {"ok": attempt.ok, "seconds": attempt.seconds, "error": attempt.error})
    if not attempt.ok:
        print(f"error: {attempt.error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
