"""Multi-process launch helpers: `prefkit train --nproc N`, and catching a launcher that silently ran
fewer processes than it was asked for."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

# `accelerate launch --cpu --num_processes 2` runs ONE process on a CPU machine without MPI, and says
# nothing about it; the only trace of the request is the launcher's own command line.
_FLAGS = re.compile(r"--(?:num_processes|num-processes|nproc_per_node|nproc-per-node)[= ](\d+)")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _parent(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[1])
    except (OSError, IndexError, ValueError):
        return None


def requested_processes(max_depth: int = 4) -> int | None:
    """How many processes a launcher above us asked for, read from its command line (Linux only)."""
    pid: int | None = os.getpid()
    for _ in range(max_depth):
        pid = _parent(pid) if pid else None
        if not pid:
            return None
        line = _cmdline(pid)
        if "accelerate" in line or "torchrun" in line or "torch.distributed.run" in line:
            match = _FLAGS.search(line)
            return int(match.group(1)) if match else None
    return None


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_first_process() -> bool:
    """Rank 0 of a launch (or the only process), from the launcher's environment: known before the
    process group is set up (accelerate's PartialState says "main" on every rank until then)."""
    return int(os.environ.get("RANK", "0")) == 0


def mislaunch_warning() -> str | None:
    """A message when more processes were asked for than are running, else None."""
    asked = requested_processes()
    running = world_size()
    if asked and asked > running:
        return (
            f"the launcher asked for {asked} processes but this run has world size {running}: "
            "`accelerate launch --cpu --num_processes N` runs a single process on a CPU machine. "
            f"Use `torchrun --nproc_per_node {asked} -m prefkit train ...` "
            f"or `prefkit train ... --nproc {asked}`."
        )
    return None


def torchrun_command(nproc: int, args: list[str]) -> list[str]:
    """The command that re-runs `prefkit <args>` under torchrun with ``nproc`` processes."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "prefkit",
        *args,
    ]
