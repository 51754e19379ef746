"""Where a sweep's jobs run.

* ``local``, ``parallel=1``: one after another in this process, through ``prefkit.train.train`` -- the
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

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefkit.sweep.folder import LOG_DIR, Attempt
from prefkit.sweep.jobs import attempt_job, ray_job
from prefkit.sweep.spec import SweepError

if TYPE_CHECKING:
    from transformers import TrainerCallback

logger = logging.getLogger(__name__)

Record = Callable[[str, Attempt], None]
BACKENDS = ("local", "ray")
POLL_SECONDS = 0.2


def run_in_process(
    jobs: Sequence[str], sweep_dir: Path, record: Record, callbacks: list[TrainerCallback] | None = None
) -> None:
    from prefkit.data.shared import shared_preparation

    with shared_preparation():
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
        env = dict(os.environ)
        if gpus > 0:
            env["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
        self.started = time.perf_counter()
        with self.log.open("a", encoding="utf-8") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {name}\n")
            log.flush()
            command = [sys.executable, "-m", "prefkit.sweep.jobs", str(sweep_dir), name, str(self.result)]
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)

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
    try:
        while pending or running:
            free = sorted(set(range(parallel)) - {w.slot for w in running})
            while pending and free:
                worker = _Worker(pending.pop(0), sweep_dir, cwd, free.pop(0), gpus)
                logger.info("sweep: started %s (log: %s)", worker.name, worker.log)
                running.append(worker)
            for worker in [w for w in running if w.process.poll() is not None]:
                running.remove(worker)
                record(worker.name, worker.attempt())
            time.sleep(POLL_SECONDS)
    finally:
        for worker in running:  # interrupted: stop the workers; their runs resume on the next attempt
            worker.process.terminate()
        for worker in running:
            try:
                worker.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.process.kill()


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
    started_here = not ray.is_initialized()
    if started_here:
        # address None: $RAY_ADDRESS, else a running local cluster, else a new local instance.
        ray.init(address=address)
    try:
        gpus = gpus_per_run
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(ray_job)
        refs: dict[Any, tuple[str, float]] = {}
        for name in jobs:
            options = {"num_cpus": 1, "num_gpus": gpus, "max_retries": 0, "name": f"prefkit-{name}"}
            ref = task.options(**options).remote(str(sweep_dir.resolve()), name, cwd)
            refs[ref] = (name, time.perf_counter())
        logger.info("sweep: %d jobs submitted to Ray (%s GPU each)", len(refs), gpus)
        try:
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
        finally:
            for ref in refs:  # interrupted: stop what still runs; those runs resume on the next attempt
                ray.cancel(ref, force=True)
    finally:
        if started_here:
            ray.shutdown()
