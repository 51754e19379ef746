"""How a run starts in its output folder: fresh, resumed from a checkpoint, or only finished -- or
refused, with the reason. Decided from what is on disk without changing it, so every process of a
distributed run decides alike. See prefkit.train.run.folder for the rules a run folder follows."""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prefkit.env import cache_dir
from prefkit.train.run.folder import (
    CHECKPOINT,
    RUN_FILE,
    RUN_NAMES,
    OutputDirError,
    RunFolder,
    RunMarker,
    read_marker,
)
from prefkit.train.run.lock import held
from prefkit.train.run.preflight import WRITE_PROBE_PREFIX

logger = logging.getLogger(__name__)


@dataclass
class StartPlan:
    """How a run starts in its output folder (decided without changing anything on disk, so every
    process of a distributed run can decide and agree)."""

    action: str  # "fresh", "resume" or "finish" (only the final save's last steps are left)
    marker: RunMarker | None  # the folder's marker, if it has one
    resume_from: Path | None = None
    clear: bool = False  # remove the previous run's listed files first


def _entries(output_dir: Path) -> list[str]:
    # Two kinds of file of prefkit's own do not count: the marker's temporary file (a first marker write
    # cut short by a kill) and pre-flight's write probe, which another rank of the same DDP launch may
    # hold for a moment while this one looks.
    return sorted(
        p.name
        for p in output_dir.iterdir()
        if p.name != f".{RUN_FILE}.tmp" and not p.name.startswith(WRITE_PROBE_PREFIX)
    )


def _describe(names: list[str]) -> str:
    shown = ", ".join(names[:6])
    return shown + (f" and {len(names) - 6} more" if len(names) > 6 else "")


def plan_start(output_dir: Path, overwrite: bool, resume: str | bool) -> StartPlan:
    """Decide how a run starts in ``output_dir``, or raise OutputDirError saying why it cannot."""
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputDirError(f"output_dir {output_dir} exists and is not a folder")
    marker = read_marker(output_dir) if output_dir.is_dir() else None
    if marker is None:
        entries = _entries(output_dir) if output_dir.is_dir() else []
        if entries:
            old = [n for n in entries if CHECKPOINT.match(n)]
            hint = (
                f" (its {_describe(old)} look like a run of an older prefkit, which did not mark its "
                "runs: move them to a new folder yourself if you want them)"
                if old
                else ""
            )
            raise OutputDirError(
                f"output_dir {output_dir} is not empty and is not a prefkit run: it holds "
                f"{_describe(entries)}{hint}. prefkit writes only into an empty folder or a run folder of "
                "its own (overwrite_output_dir does not change that): choose another output_dir"
            )
        if resume not in (False, "auto"):
            return StartPlan("fresh", None, explicit_checkpoint(Path(resume)))
        return StartPlan("fresh", None)

    if marker.files is None:
        raise OutputDirError(
            f"output_dir {output_dir} holds a finished run of an older prefkit, which did not record which "
            f"files it wrote, so prefkit will not write or delete anything there"
            f"{' (overwrite_output_dir cannot apply)' if overwrite else ''}: choose another output_dir, or "
            "remove that run yourself"
        )
    if marker.finished and not overwrite:
        raise OutputDirError(
            f"output_dir {output_dir} holds a finished run; the model is in {output_dir}. prefkit will not "
            "overwrite it: choose another output_dir, or set overwrite_output_dir: true to replace it."
        )
    folder = RunFolder(output_dir, marker)
    foreign = [
        n
        for n in _entries(output_dir)
        if n != RUN_FILE and not folder.owns(n) and (CHECKPOINT.match(n) or n in RUN_NAMES)
    ]
    if foreign:
        raise OutputDirError(
            f"output_dir {output_dir} is a prefkit run, but it also holds {_describe(foreign)}, which "
            "the run's marker does not list (not written by the run): prefkit will not write over a file "
            "it did not write. Move them out of the folder"
        )
    if overwrite:
        logger.warning(
            "overwrite_output_dir: true -- replacing the run in %s (its own files only)", output_dir
        )
        return StartPlan("fresh", marker, clear=True)
    if marker.status == "saving-final" and folder.final_is_complete():
        return StartPlan("finish", marker)
    own = folder.checkpoints()
    latest = own[-1] if own else None
    if marker.status == "saving-final":
        logger.warning(
            "the final model in %s was lost mid-save; saving it again from %s", output_dir, latest or "start"
        )
    if resume is False:
        if latest is None:
            return StartPlan("fresh", marker, clear=True)
        raise OutputDirError(
            f"output_dir {output_dir} has checkpoints of an unfinished run ({latest.name} is the latest) "
            "and resume_from_checkpoint is false: set resume_from_checkpoint: auto to continue it, or "
            "overwrite_output_dir: true to start again."
        )
    if resume == "auto":
        if latest is None:
            return StartPlan("fresh", marker, clear=True)
        return StartPlan("resume", marker, latest)
    return StartPlan("resume", marker, explicit_checkpoint(Path(resume)))


def explicit_checkpoint(path: Path) -> Path:
    if not (path / "trainer_state.json").is_file():
        raise OutputDirError(
            f"resume_from_checkpoint: {path} is not a complete checkpoint (no trainer_state.json in it)"
        )
    return path


# -------------------------------------------------------------------------------- folders that stay


def _real(path: Path) -> Path:
    try:
        return path.expanduser().resolve()
    except (OSError, RuntimeError):
        return path.expanduser().absolute()


def check_not_overlapping(output_dir: Path, protected: dict[str, list[Path]]) -> None:
    """Refuse an ``output_dir`` that is, lies inside, or contains a folder the run reads: the model, the
    adapter, the data. ``protected`` maps a role ("the model", ...) to its local paths; a data *file*
    protects its own folder (output_dir equal to it) and itself."""
    out = _real(output_dir)
    for role, paths in protected.items():
        for path in paths:
            if not path.exists():
                continue
            real = _real(path)
            if real.is_dir():
                clash = out == real or out.is_relative_to(real) or real.is_relative_to(out)
            else:
                clash = out == real.parent or real.is_relative_to(out)
            if clash:
                raise OutputDirError(
                    f"output_dir {output_dir} overlaps {role} ({path}): a run's output folder must be "
                    f"neither {role}'s folder, nor inside it, nor around it -- prefkit never writes where "
                    "it reads. Choose another output_dir"
                )


@contextlib.contextmanager
def training_into(output_dir: Path, enabled: bool = True) -> Iterator[None]:
    """Hold this output folder for the run: a second prefkit process training into the same folder (a
    command started twice, a sweep rerun while its workers still train) is refused instead of writing
    the same checkpoints and marker. The lock file is in prefkit's cache, keyed by the folder's real path
    -- not in the folder, which holds only the run's files."""
    if not enabled:
        yield
        return
    key = hashlib.sha256(str(_real(output_dir)).encode()).hexdigest()[:32]
    lock_file = cache_dir() / "locks" / f"{key}.lock"
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        lock_file.touch()
    except OSError as err:  # an unwritable cache: train unlocked rather than not at all
        logger.debug("no run lock for %s: %s", output_dir, err)
        yield
        return
    with held(
        lock_file,
        lambda holder: OutputDirError(
            f"output_dir {output_dir}: another prefkit process ({holder}) is training into it now; wait "
            "for it to end or stop it, then run this command again (it resumes)"
        ),
    ):
        yield
