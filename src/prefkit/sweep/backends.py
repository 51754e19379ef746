"""Where a sweep's jobs run.

* ``local``, ``parallel=1``: one after another in this process, through ``prefkit.train.recipe.train`` -- the
  prepared data is shared between runs, and a run that fails is recorded and the next one starts.
* ``local``, ``parallel=K``: K worker processes at a time (``python -m prefkit.sweep.jobs``), each job in
  its own, so a crash (out of memory, a segfault) takes down only that run. With several CUDA GPUs, worker
  slot i sees GPU i mod the GPU count.
* ``ray``: each job a Ray task (GPUs as resources) on a running cluster or a local Ray instance; the
  sweep folder, the config, the data and the model must be at the same paths on every node (a shared
  file system).

Every backend reports each job's outcome to ``record`` as it ends. KeyboardInterrupt stops the sweep
(workers are stopped too): every run is resumable, and a rerun goes on from there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefkit.errors import TrainingInterrupted
from prefkit.sweep.folder import LOG_DIR, Attempt
from prefkit.sweep.jobs import SWEEP_PID_ENV, attempt_job, ray_job
from prefkit.sweep.spec import SweepError

if TYPE_CHECKING:
    from transformers import TrainerCallback

logger = logging.getLogger(__name__)

Record = Callable[[str, Attempt], None]
BACKENDS = ("local", "ray")
POLL_SECONDS = 0.2
SIGTERM_TEXT = "SIGTERM"
STOP_SECONDS = 300  # how long a stopped worker may take to save its checkpoint


def run_in_process(
    jobs: Sequence[str], sweep_dir: Path, record: Record, callbacks: list[TrainerCallback] | None = None
) -> None:
    # The prepared data is shared through the sweep's shared_preparation() scope (run._execute).
    for name in jobs:
        record(name, attempt_job(sweep_dir, name, callbacks))


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:  # pragma: no cover
        return 0


class _Worker:
    def __init__(self, name: str, sweep_dir: Path, cwd: str, slot: int, gpus: int) -> None:
        logs = sweep_dir / LOG_DIR
        logs.mkdir(exist_ok=True)
        self.name = name
        self.slot = slot
        self.log = logs / f"{name}.log"
        self.result = logs / f"{name}.result.json"
        self.result.unlink(missing_ok=True)
        env = {**os.environ, SWEEP_PID_ENV: str(os.getpid())}
        if gpus > 0:
            env["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
        self.started = time.perf_counter()
        with self.log.open("a", encoding="utf-8") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {name}\n")
            log.flush()
            command = [sys.executable, "-m", "prefkit.sweep.jobs", str(sweep_dir), name, str(self.result)]
            # A session of its own: a Ctrl-C at the terminal reaches the sweep, which stops each worker
            # with exactly one signal (a second one would cut a checkpoint save short).
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
            )

    def attempt(self) -> Attempt:
        import json

        seconds = time.perf_counter() - self.started
        try:
            outcome = json.loads(self.result.read_text(encoding="utf-8"))
            return Attempt(bool(outcome["ok"]), seconds, outcome.get("error"))
        except (OSError, ValueError, KeyError):
            tail = _log_tail(self.log)
            return Attempt(
                False,
                seconds,
                f"the worker process ended with exit status {self.process.returncode} without a result "
                f"(killed, out of memory?); the end of {self.log}:\n{tail}",
            )


def run_in_subprocesses(
    jobs: Sequence[str], sweep_dir: Path, cwd: str, record: Record, parallel: int
) -> None:
    """``cwd``: the folder the sweep's config paths are relative to."""
    sweep_dir = sweep_dir.resolve()
    pending = list(jobs)
    running: list[_Worker] = []
    gpus = _gpu_count()
    with _stops_the_sweep("each run in training saved a checkpoint first."):
        try:
            while pending or running:
                free = sorted(set(range(parallel)) - {w.slot for w in running})
                while pending and free:
                    with _signals_held():  # started and listed as one: _stop reaches every worker
                        worker = _Worker(pending.pop(0), sweep_dir, cwd, free.pop(0), gpus)
                        running.append(worker)
                    logger.info("sweep: started %s (log: %s)", worker.name, worker.log)
                for worker in [w for w in running if w.process.poll() is not None]:
                    running.remove(worker)
                    record(worker.name, worker.attempt())
                time.sleep(POLL_SECONDS)
        finally:
            _stop(running)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait (are delivered at the end of the block) -- main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


def _stop(workers: Sequence[_Worker]) -> None:
    """Interrupted: one SIGTERM to each worker still running -- it saves a checkpoint and exits, and its
    run resumes on the next attempt -- then a wait for the save; a worker still there after that is killed."""
    if workers:
        logger.warning("sweep: stopping %d running jobs (each saves a checkpoint first)", len(workers))
    for worker in workers:
        worker.process.terminate()
    deadline = time.monotonic() + STOP_SECONDS
    for worker in workers:
        try:
            worker.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()


@contextlib.contextmanager
def _stops_the_sweep(what_happened: str) -> Iterator[None]:
    """Ctrl-C, or SIGTERM (a scheduler, `kill`), inside the block ends it like an exception (its cleanup
    runs: workers stopped, tasks cancelled), then raises TrainingInterrupted saying ``what_happened`` to the
    runs, with the signal's exit code."""
    stopped_by: signal.Signals | None = None

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(SIGTERM_TEXT)

    on_main_thread = threading.current_thread() is threading.main_thread()  # where Python takes signals
    previous = signal.signal(signal.SIGTERM, interrupt) if on_main_thread else None
    try:
        yield
    except KeyboardInterrupt as err:
        stopped_by = signal.SIGTERM if str(err) == SIGTERM_TEXT else signal.SIGINT
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)
    if stopped_by is not None:
        raise TrainingInterrupted(
            f"the sweep was stopped ({stopped_by.name}); {what_happened} Run the same command to go on.",
            stopped_by,
        )


def run_on_ray(
    jobs: Sequence[str],
    sweep_dir: Path,
    cwd: str,
    record: Record,
    address: str | None,
    gpus_per_run: float | None,
) -> None:
    """``cwd``: the folder the sweep's config paths are relative to (the same path on every node)."""
    try:
        import ray
    except ImportError:
        raise SweepError(
            "--backend ray needs Ray: pip install 'prefkit[ray]' (on every node of the cluster)"
        ) from None
    cancelled = (
        "its Ray tasks were cancelled, so their runs resume from their last saved checkpoint (the steps "
        "after it are trained again)."
    )
    with _stops_the_sweep(cancelled):
        started_here = not ray.is_initialized()
        if started_here:
            # address None: $RAY_ADDRESS, else a running local cluster, else a new local instance.
            ray.init(address=address)
        try:
            refs = _submit(ray, jobs, sweep_dir, cwd, gpus_per_run)
            try:
                _collect(ray, refs, record)
            finally:
                for ref in refs:  # interrupted: stop what still runs; those runs resume on the next attempt
                    ray.cancel(ref, force=True)
        finally:
            if started_here:
                ray.shutdown()


def _submit(
    ray: Any, jobs: Sequence[str], sweep_dir: Path, cwd: str, gpus_per_run: float | None
) -> dict[Any, tuple[str, float]]:
    """Each job as a Ray task: {task ref: (job name, start time)}."""
    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    gpus = gpus_per_run
    if gpus is None:
        gpus = 1 if cluster_gpus >= 1 else 0
    if gpus > cluster_gpus:  # Ray would wait for them forever
        raise SweepError(
            f"--gpus-per-run {gpus:g}: the Ray cluster has {cluster_gpus:g} GPUs, so no run could start"
        )
    task = ray.remote(ray_job)
    refs: dict[Any, tuple[str, float]] = {}
    for name in jobs:
        options = {"num_cpus": 1, "num_gpus": gpus, "max_retries": 0, "name": f"prefkit-{name}"}
        ref = task.options(**options).remote(str(sweep_dir.resolve()), name, cwd)
        refs[ref] = (name, time.perf_counter())
    logger.info("sweep: %d jobs submitted to Ray (%s GPU each)", len(refs), gpus)
    return refs


def _collect(ray: Any, refs: dict[Any, tuple[str, float]], record: Record) -> None:
    """Record each task's outcome as it ends (removing it from ``refs``)."""
    while refs:
        done, _ = ray.wait(list(refs), num_returns=1)
        for ref in done:
            name, started = refs.pop(ref)
            try:
                outcome = ray.get(ref)
                attempt = Attempt(bool(outcome["ok"]), outcome["seconds"], outcome["error"])
            except ray.exceptions.RayError as err:  # the worker died (killed, out of memory)
                attempt = Attempt(False, time.perf_counter() - started, f"Ray task failed: {err}")
            record(name, attempt)
