"""The run marker and the output-folder rules: prefkit writes only into an empty folder or its own run,
deletes only what its marker lists, and never uses the folders it reads from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefkit.train.run.folder import RUN_FILE, OutputDirError, RunFolder, read_marker
from prefkit.train.run.start import check_not_overlapping, plan_start


def marked(folder: Path, status: str = "running", files: list[str] | None = None, **fields) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RUN_FILE).write_text(json.dumps({"status": status, "files": files or [], **fields}))
    return folder


def checkpoint(folder: Path, step: int) -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return path


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("", "cannot be read as JSON"),
        ("{", "cannot be read as JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('"finished"', "expected a JSON object, got str"),
        ('{"status": "done", "files": []}', "status 'done' is none of"),
        ('{"status": "running", "files": ["../../home"]}', "'files' must be a list of names"),
        ('{"status": "running", "files": ["/etc"]}', "'files' must be a list of names"),
        ('{"status": "running", "files": "metrics.jsonl"}', "'files' must be a list of names"),
        ('{"status": "running"}', "an unfinished run without a 'files' list"),
        ('{"status": "saving-final", "files": []}', "needs a 'final_files' list"),
        ('{"status": "saving-final", "files": [], "final_files": ["a"]}', "needs its 'global_step'"),
    ],
)
def test_a_malformed_marker_is_a_clear_error(tmp_path, content, why):
    (tmp_path / RUN_FILE).write_text(content)
    with pytest.raises(OutputDirError, match="not a valid prefkit run marker") as err:
        read_marker(tmp_path)
    assert why in str(err.value) and str(tmp_path / RUN_FILE) in str(err.value)
    with pytest.raises(OutputDirError):  # and so is starting a run there, overwrite or not
        plan_start(tmp_path, overwrite=True, resume="auto")


def test_a_folder_that_is_not_empty_and_not_a_run_is_refused(tmp_path):
    (tmp_path / "README.md").write_text("mine")
    (tmp_path / "metrics.jsonl").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(OutputDirError, match=r"not empty and is not a prefkit run: it holds README.md"):
            plan_start(tmp_path, overwrite=overwrite, resume="auto")


def test_an_old_unmarked_run_gets_a_hint(tmp_path):
    checkpoint(tmp_path, 2)
    with pytest.raises(OutputDirError, match="look like a run of an older prefkit"):
        plan_start(tmp_path, overwrite=False, resume="auto")


def test_an_old_finished_marker_is_never_overwritten(tmp_path):
    """A 0.1.0 marker lists no files, so prefkit cannot tell its files from the user's."""
    (tmp_path / RUN_FILE).write_text(json.dumps({"status": "finished", "global_step": 4}))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(OutputDirError, match="older prefkit, which did not record which files"):
        plan_start(tmp_path, overwrite=True, resume="auto")


def test_empty_or_missing_folders_start_fresh_and_output_dir_must_be_a_folder(tmp_path):
    assert plan_start(tmp_path / "new", False, "auto").action == "fresh"
    assert plan_start(tmp_path, False, "auto").action == "fresh"
    # A kill during the very first marker write leaves only its temporary file: still empty.
    (tmp_path / f".{RUN_FILE}.tmp").write_text("{")
    assert plan_start(tmp_path, False, "auto").action == "fresh"
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputDirError, match="exists and is not a folder"):
        plan_start(tmp_path / "file", False, "auto")
    with pytest.raises(OutputDirError, match="exists and is not a folder"):
        plan_start(Path("/dev/null"), True, "auto")


def test_plans_for_a_run_folder(tmp_path):
    run = marked(tmp_path / "run", files=["checkpoint-2", "checkpoint-4", "metrics.jsonl"])
    checkpoint(run, 2)
    checkpoint(run, 4)
    plan = plan_start(run, False, "auto")
    assert (plan.action, plan.resume_from) == ("resume", run / "checkpoint-4")
    assert plan_start(run, True, "auto").clear
    with pytest.raises(OutputDirError, match="checkpoint-4 is the latest"):
        plan_start(run, False, False)
    (run / RUN_FILE).write_text(json.dumps({"status": "finished", "files": ["checkpoint-2", "checkpoint-4"]}))
    with pytest.raises(OutputDirError, match="holds a finished run"):
        plan_start(run, False, "auto")


def test_a_users_checkpoint_in_a_run_folder_is_refused_not_resumed(tmp_path):
    run = marked(tmp_path / "run", files=["checkpoint-2"])
    checkpoint(run, 2)
    checkpoint(run, 9)  # the user's, copied in: complete, newer, and not the run's
    with pytest.raises(OutputDirError, match="also holds checkpoint-9, which the run's marker"):
        plan_start(run, False, "auto")


def test_clear_and_rotation_touch_only_listed_paths(tmp_path):
    run = marked(tmp_path / "run", files=["checkpoint-2", "checkpoint-4", "checkpoint-6", "metrics.jsonl"])
    for step in (2, 4, 6):
        checkpoint(run, step)
    (run / "metrics.jsonl").write_text("{}\n")
    (run / "notes.txt").write_text("mine")
    (run / "checkpoint-1").mkdir()  # a user's folder with a checkpoint-like name
    folder = RunFolder(run, read_marker(run))
    folder.rotate(1)
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("checkpoint")) == [
        "checkpoint-1",
        "checkpoint-6",
    ]
    assert read_marker(run).files == ["checkpoint-6", "metrics.jsonl", ".staging"]
    folder.clear()
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-1", "notes.txt", RUN_FILE]
    assert (run / "notes.txt").read_text() == "mine"


def test_claiming_a_name_the_user_has_is_refused(tmp_path):
    folder = RunFolder.claim(tmp_path / "run", None, clear=False, resume=False)
    (folder.path / "loss.png").write_text("mine")
    with pytest.raises(OutputDirError, match=r"loss\.png exists and is not prefkit's"):
        folder.claim_name("loss.png")
    assert (folder.path / "loss.png").read_text() == "mine"
    folder.claim_name("rewards.png")
    assert read_marker(folder.path).files == ["rewards.png"]  # listed before it is written


def test_output_dir_may_not_overlap_what_the_run_reads(tmp_path):
    model, data = tmp_path / "model", tmp_path / "data"
    model.mkdir()
    data.mkdir()
    (data / "train.jsonl").write_text("{}")
    protected = {"the model": [model], "the data": [data / "train.jsonl"]}
    for bad in (model, model / "out", tmp_path, data):
        with pytest.raises(OutputDirError, match="overlaps"):
            check_not_overlapping(bad, protected)
    check_not_overlapping(tmp_path / "out", protected)
    check_not_overlapping(data / "out", protected)  # beside a data file is fine; only its folder is not
