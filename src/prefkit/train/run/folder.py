"""A run folder is prefkit's own: the run marker, and the rules that keep everything else safe.

prefkit writes only into an ``output_dir`` that is empty (or absent) or that carries its run marker,
``prefkit_run.json``. The marker is written when the run starts and lists every file and folder the
run has created (each is listed *before* it is created, so a kill between the two leaves a listed
name that does not exist, never an unlisted file of ours). Overwriting a run removes exactly the
listed paths; checkpoint rotation removes only listed checkpoints; a name in the folder that is not
listed is the user's and is never written over or removed.

The marker's ``status`` says how far the run got:

* ``running`` -- training (or about to); the listed ``checkpoint-N`` folders are its checkpoints;
* ``saving-final`` -- training is over and the final model lies complete in ``.staging/final``; its
  files (``final_files``) are being moved into place. A run killed here is finished by the next
  ``prefkit train`` without training again;
* ``finished`` -- done. Never overwritten without ``overwrite_output_dir``.

A marker from prefkit 0.1.0 (written only at the end, without a file list) marks a finished run
whose files prefkit cannot tell from the user's: it is never overwritten; the user removes it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import prefkit
from prefkit.errors import PrefkitError

logger = logging.getLogger(__name__)

RUN_FILE = "prefkit_run.json"
STAGING_DIR = ".staging"  # checkpoints and the final model are written here, then renamed into place
FINAL_DIR = "final"  # the final model's folder inside STAGING_DIR
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
STATUSES = ("running", "saving-final", "finished")
# Names a run may write that are not checkpoints: a user's file under one of these names in a run
# folder is refused up front rather than met half way through training.
RUN_NAMES = ("metrics.jsonl", "training_config.json", "loss.png", "rewards.png", STAGING_DIR)

KILL_ENV = "PREFKIT_TEST_KILL_AT"  # crash-test hook, see crash_point


class OutputDirError(PrefkitError):
    """The output folder cannot be used as asked (not ours, finished, malformed marker, ...)."""


def crash_point(phase: str, step: int | None = None) -> None:
    """Crash-test hook: SIGKILL this process at a named phase boundary when the environment variable
    ``PREFKIT_TEST_KILL_AT`` is ``phase`` or ``phase:step``. The crash suite uses it to kill a run at
    exactly the moments that matter (mid checkpoint, after the final save, ...); unset, it costs one
    dictionary lookup."""
    wanted = os.environ.get(KILL_ENV)
    if wanted and (wanted == phase or (step is not None and wanted == f"{phase}:{step}")):
        os.kill(os.getpid(), signal.SIGKILL)


def write_text_atomic(path: Path, text: str) -> None:
    """Write beside ``path``, then rename over it: a reader sees the old file or the new, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, default=str))


# ------------------------------------------------------------------------------------------ marker


def _valid_name(name: object) -> bool:
    """A listed entry is a plain name at the top of the folder: nothing a marker could use to reach
    outside it (``..``, ``/etc``, ``a/b``)."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..", RUN_FILE)
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
    )


@dataclass
class RunMarker:
    status: str
    files: list[str] | None  # None: an old marker, written before prefkit recorded its files
    fields: dict[str, Any]  # everything else in the marker (global_step, final_files, ...)

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    def to_json(self) -> dict[str, Any]:
        return {**self.fields, "status": self.status, "files": self.files}


def read_marker(output_dir: Path) -> RunMarker | None:
    """The folder's run marker, None if it has none; an OutputDirError for one that is not valid."""
    path = output_dir / RUN_FILE
    if not path.exists() and not path.is_symlink():
        return None

    def bad(why: str) -> OutputDirError:
        return OutputDirError(
            f"{path}: not a valid prefkit run marker ({why}), so prefkit cannot tell which files in "
            f"{output_dir} are its own and will not write there: if the folder is yours, choose another "
            "output_dir; if it is a prefkit run, restore the file or move the run's files elsewhere"
        )

    if path.is_symlink() or not path.is_file():
        raise bad("not a regular file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise bad(f"cannot be read as JSON: {str(exc)[:100]}") from None
    if not isinstance(data, dict):
        raise bad(f"expected a JSON object, got {type(data).__name__}")
    status = data.get("status")
    if status not in STATUSES:
        raise bad(f"status {str(status)[:40]!r} is none of {', '.join(STATUSES)}")
    files = data.get("files")
    if files is not None and (not isinstance(files, list) or not all(_valid_name(f) for f in files)):
        raise bad("'files' must be a list of names of files and folders directly inside the folder")
    if files is None and status != "finished":
        raise bad("an unfinished run without a 'files' list")
    final = data.get("final_files")
    if status == "saving-final" and (
        not isinstance(final, list) or not final or not all(_valid_name(f) for f in final)
    ):
        raise bad("a run saving its final model needs a 'final_files' list of names")
    step = data.get("global_step")
    if status == "saving-final" and (not isinstance(step, int) or isinstance(step, bool) or step < 0):
        raise bad("a run saving its final model needs its 'global_step'")
    fields = {k: v for k, v in data.items() if k not in ("status", "files")}
    return RunMarker(status, list(files) if files is not None else None, fields)


# ------------------------------------------------------------------------------------------ folder


class RunFolder:
    """An output folder prefkit owns. Every change a run makes to its folder goes through here, so the
    marker always lists what the run wrote (main process only: other ranks never write the folder)."""

    def __init__(self, path: Path, marker: RunMarker) -> None:
        self.path = path
        self.marker = marker

    # -- claiming -------------------------------------------------------------------------------
    @classmethod
    def claim(cls, path: Path, previous: RunMarker | None, *, clear: bool, resume: bool) -> RunFolder:
        """Make ``path`` this run's folder: new (empty) -> marked; ``clear`` -> the previous run's listed
        files removed first; ``resume`` -> the previous run's files kept, status back to running."""
        path.mkdir(parents=True, exist_ok=True)
        files: list[str] = []
        if previous is not None:
            assert previous.files is not None  # plan_start refuses old markers
            folder = cls(path, previous)
            folder._remove_stale_temporaries()
            if clear:
                folder.clear()
            files = list(previous.files) if resume else []
        (path / f".{RUN_FILE}.tmp").unlink(missing_ok=True)  # a marker write cut short by a kill
        fields: dict[str, Any] = {"prefkit_version": prefkit.__version__}
        if resume and previous is not None and "started" in previous.fields:
            fields["started"] = previous.fields["started"]
        else:
            fields["started"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        folder = cls(path, RunMarker("running", files, fields))
        folder._save()
        return folder

    def _remove_stale_temporaries(self) -> None:
        # write_text_atomic's `.NAME.tmp` of our own files, left by a kill mid-write.
        assert self.marker.files is not None
        for name in [RUN_FILE, *self.marker.files]:
            (self.path / f".{name}.tmp").unlink(missing_ok=True)

    def _save(self) -> None:
        write_json_atomic(self.path / RUN_FILE, self.marker.to_json())

    # -- what is ours ---------------------------------------------------------------------------
    @property
    def files(self) -> list[str]:
        assert self.marker.files is not None
        return self.marker.files

    def owns(self, name: str) -> bool:
        return name in self.files

    def claim_name(self, name: str) -> Path:
        """List ``name`` as this run's (before it is created) and return its path; an error if a file of
        that name exists and is not ours."""
        target = self.path / name
        if not self.owns(name):
            if target.exists() or target.is_symlink():
                raise OutputDirError(
                    f"{target} exists and is not prefkit's (its run marker does not list it): prefkit will "
                    f"not write over it. Move it out of {self.path}, then run the same command again to go on"
                )
            self.files.append(name)
            self._save()
        return target

    def remove(self, name: str) -> None:
        """Delete a listed path. A folder is first renamed into the staging folder (one atomic step), so
        a kill mid-delete never leaves a half-deleted checkpoint under its real name."""
        if not self.owns(name):
            raise OutputDirError(f"refusing to remove {self.path / name}: prefkit did not write it")
        target = self.path / name
        if name == STAGING_DIR or not target.is_dir() or target.is_symlink():
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
        else:
            trash = self.claim_name(STAGING_DIR) / f"trash-{name}"
            trash.parent.mkdir(exist_ok=True)
            shutil.rmtree(trash, ignore_errors=True)
            os.replace(target, trash)
            crash_point("removing")
            shutil.rmtree(trash, ignore_errors=True)
        self.files.remove(name)
        self._save()

    def clear(self) -> None:
        """Remove every listed path (overwrite_output_dir). The staging folder goes last: removing a
        checkpoint passes through it (and lists it, if a finished run had already removed it)."""
        for name in [n for n in self.files if n != STAGING_DIR]:
            self.remove(name)
        if self.owns(STAGING_DIR):
            self.remove(STAGING_DIR)

    def checkpoints(self) -> list[Path]:
        """This run's complete checkpoints, oldest first (in the order they were saved)."""
        return [
            self.path / name
            for name in self.files
            if CHECKPOINT.match(name) and (self.path / name / "trainer_state.json").is_file()
        ]

    def rotate(self, limit: int | None, keep: Path | None = None) -> None:
        """save_total_limit: remove this run's oldest checkpoints (never the newest, nor ``keep``, the
        best one) until ``limit`` remain. Checkpoints the run did not write are not counted or touched."""
        if not limit or limit <= 0:
            return
        own = self.checkpoints()
        protected = {own[-1]} if own else set()
        if keep is not None:
            protected.add(keep)
        excess = len(own) - max(limit, len(protected))
        for checkpoint in own:
            if excess <= 0:
                break
            if checkpoint not in protected:
                self.remove(checkpoint.name)
                excess -= 1

    # -- finishing ------------------------------------------------------------------------------
    @property
    def final_staging(self) -> Path:
        return self.path / STAGING_DIR / FINAL_DIR

    def begin_final(self, names: list[str], global_step: int) -> None:
        """The final model lies complete in ``final_staging``: list its files, and say so in the marker
        (status saving-final). From here a killed run is finished by the next start, not retrained."""
        for name in names:
            self.claim_name(name)
        self.marker.status = "saving-final"
        self.marker.fields.update(final_files=names, global_step=global_step)
        self._save()

    def final_is_complete(self) -> bool:
        """Whether every final file is in place or still in staging (read-only: every rank may ask)."""
        names = self.marker.fields.get("final_files") or []
        return all((self.final_staging / n).exists() or (self.path / n).exists() for n in names)

    def complete_final(self) -> None:
        """Move the final model's files into place (each move atomic; a rerun after a kill finishes it)."""
        for index, name in enumerate(self.marker.fields["final_files"]):
            source, target = self.final_staging / name, self.path / name
            if not source.exists():
                continue  # moved before a kill
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)  # ours: listed by begin_final
            os.replace(source, target)
            if index == 0:
                crash_point("final-moving")
        shutil.rmtree(self.final_staging, ignore_errors=True)

    def finish(self, **fields: Any) -> None:
        if self.owns(STAGING_DIR):
            self.remove(STAGING_DIR)  # empty by now; a finished run folder holds only results
        self.marker.status = "finished"
        self.marker.fields.pop("final_files", None)
        self.marker.fields.update(fields, prefkit_version=prefkit.__version__)
        self._save()


def checkpoints(output_dir: Path) -> list[Path]:
    """The complete checkpoints of the run in ``output_dir``, oldest first ([] if it is not a run)."""
    marker = read_marker(output_dir) if output_dir.is_dir() else None
    if marker is None or marker.files is None:
        return []
    return RunFolder(output_dir, marker).checkpoints()
