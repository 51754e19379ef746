"""The file-safety suite: decoy files in every place issue #11 found prefkit deleting or overwriting them,
then every command; each decoy must come out byte for byte as it went in."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from toydata import toy_pairs
from typer.testing import CliRunner

from prefkit.cli import app

runner = CliRunner()

DECOYS = {
    "README.md": "# my notes\n",
    "metrics.jsonl": '{"mine": true}\n',
    "tokenizer.json": '{"mine": true}\n',
    "training_args.bin": "not prefkit's",
    "config.json": '{"mine": true}\n',
    "loss.png": "my plot",
    ".staging/mine.txt": "mine",
    "checkpoint-1/notes.txt": "my checkpoint-like folder",
    "checkpoint-2/notes.txt": "no trainer state: not a checkpoint",
}


def plant(folder: Path, names: dict[str, str] = DECOYS) -> dict[str, str]:
    """Write the decoys; returns the folder's snapshot (every file in it, decoys and all)."""
    for name, text in names.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return snapshot(folder)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path -> sha256)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def decoys_intact(folder: Path, before: dict[str, str]) -> bool:
    after = snapshot(folder)
    return all(after.get(name) == digest for name, digest in before.items())


def train_args(config: Path, *overrides: str) -> list[str]:
    return ["train", str(config), *overrides]


@pytest.fixture
def setup(tmp_path, tiny_model_dir):
    """A copy of the tiny model (so it can be a decoy folder itself), data and a config."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    data = tmp_path / "data"
    data.mkdir()
    toy_pairs(data / "pairs.jsonl")
    (data / "README.md").write_text("dataset card")
    (data / "dataset_info.json").write_text(
        json.dumps({"pairs": {"file_name": "pairs.jsonl", "ranking": True}})
    )
    config = tmp_path / "cfg.yaml"
    config.write_text(
        f"model_name_or_path: {model}\ntrain_file: {data / 'pairs.jsonl'}\nstage: dpo\n"
        "per_device_train_batch_size: 4\nmax_steps: 4\nsave_steps: 2\nlogging_steps: 1\ncutoff_len: 64\n"
        "learning_rate: 5.0e-3\n"
    )
    return tmp_path, model, data, config


@pytest.mark.parametrize("overwrite", ["false", "true"])
def test_a_folder_of_the_users_is_never_written(setup, overwrite):
    tmp_path, _, _, config = setup
    out = tmp_path / "out"
    out.mkdir()
    before = plant(out)
    result = runner.invoke(app, train_args(config, f"output_dir={out}", f"overwrite_output_dir={overwrite}"))
    assert result.exit_code == 2 and "is not empty and is not a prefkit run" in result.output
    assert snapshot(out) == before


@pytest.mark.parametrize("where", ["model", "model/sub", "data", "dataset_dir"])
def test_the_model_and_data_folders_are_never_the_output(setup, where):
    _, model, data, config = setup
    out = {"model": model, "model/sub": model / "sub", "data": data, "dataset_dir": data}[where]
    extra = ["dataset=pairs", f"dataset_dir={data}", "train_file=null"] if where == "dataset_dir" else []
    before_model, before_data = snapshot(model), snapshot(data)
    result = runner.invoke(app, train_args(config, f"output_dir={out}", "overwrite_output_dir=true", *extra))
    assert result.exit_code == 2 and "overlaps" in result.output, result.output
    assert snapshot(model) == before_model and snapshot(data) == before_data


def test_an_empty_output_dir_is_a_config_error_and_the_current_folder_is_untouched(setup, monkeypatch):
    tmp_path, _, _, config = setup
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    before = plant(cwd, {"metrics.jsonl": '{"mine": 1}\n'})
    monkeypatch.chdir(cwd)
    result = runner.invoke(app, train_args(config, "output_dir="))
    assert result.exit_code == 2 and "output_dir: got None -- expected the path of a folder" in result.output
    assert snapshot(cwd) == before


@pytest.mark.slow
def test_overwriting_a_run_removes_only_what_it_wrote(setup):
    tmp_path, _, _, config = setup
    out = tmp_path / "run"
    assert runner.invoke(app, train_args(config, f"output_dir={out}", "save_total_limit=1")).exit_code == 0
    theirs = {"config.json": "mine", "notes/a.txt": "mine", "plots/loss.png": "mine"}  # beside a LoRA run
    before = {name: digest for name, digest in plant(out, theirs).items() if name in theirs}
    again = runner.invoke(app, train_args(config, f"output_dir={out}", "overwrite_output_dir=true"))
    assert again.exit_code == 0, again.output
    assert decoys_intact(out, before)
    marker = json.loads((out / "prefkit_run.json").read_text())
    assert marker["status"] == "finished" and "config.json" not in marker["files"]
    # A user's folder with a checkpoint's name, or files in a staging folder, inside a run: refused.
    for name in ("checkpoint-1/notes.txt", ".staging/mine.txt"):
        more = plant(out, {name: "mine"})
        result = runner.invoke(app, train_args(config, f"output_dir={out}", "overwrite_output_dir=true"))
        assert result.exit_code == 2 and "which the run's marker does not list" in result.output
        assert snapshot(out) == more
        shutil.rmtree(out / name.split("/")[0])


def test_data_commands_leave_everything_but_their_output(setup):
    tmp_path, _, data, _ = setup
    before = plant(data, {"notes.txt": "mine"})
    assert runner.invoke(app, ["data", "check", str(data)]).exit_code == 0
    converted = tmp_path / "converted" / "pairs.json"
    converted.parent.mkdir()
    beside = plant(converted.parent, {"keep.json": "[]"})
    args = ["data", "convert", str(data / "pairs.jsonl"), str(converted), "--to", "sharegpt-pair"]
    assert runner.invoke(app, args).exit_code == 0
    assert runner.invoke(app, args).exit_code == 2  # the output exists: no --force, no overwrite
    assert snapshot(data) == before and decoys_intact(converted.parent, beside)


def test_quickstart_refuses_a_folder_of_the_users(setup):
    from prefkit.quickstart.recipe import run_quickstart
    from prefkit.train.run.folder import OutputDirError

    tmp_path, model, _, _ = setup
    out = tmp_path / "quick"
    out.mkdir()
    before = plant(out)
    with pytest.raises(OutputDirError, match="is not empty and is not a prefkit run"):
        run_quickstart(
            out,
            overrides=[f"model_name_or_path={model}", "max_steps=2", "cutoff_len=64", "bf16=false"],
            eval_pairs=2,
            generation_prompts=2,
            max_new_tokens=2,
        )
    assert snapshot(out) == before
    assert not any(name.startswith("quickstart_report") for name in os.listdir(out))


@pytest.mark.slow
def test_a_second_process_training_into_the_same_folder_is_refused(setup):
    """Another process holds the folder (a first `prefkit train` still running): the second is refused
    and writes nothing; once the first has ended, the same command runs."""
    tmp_path, _, _, config = setup
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_FOLDER, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        result = runner.invoke(app, train_args(config, f"output_dir={out}"))
        assert result.exit_code == 2 and "another prefkit process (pid" in result.output, result.output
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    result = runner.invoke(app, train_args(config, f"output_dir={out}"))
    assert result.exit_code == 0, result.output


HOLD_FOLDER = """
import sys, time
from pathlib import Path
from prefkit.train.run.start import training_into
with training_into(Path(sys.argv[1])):
    print("holding", flush=True)
    time.sleep(600)
"""


def test_only_rank_0_holds_the_folder_and_a_write_probe_is_not_a_strangers_file(tmp_path, monkeypatch):
    """Every rank of a DDP launch trains into one folder: only rank 0 takes the lock (the others would be
    refused by it). Pre-flight's write probe, held for a moment by one rank, does not make the folder
    look like someone else's to another."""
    from prefkit.train.distributed import is_first_process
    from prefkit.train.run.preflight import WRITE_PROBE_PREFIX
    from prefkit.train.run.start import plan_start, training_into

    out = tmp_path / "out"
    out.mkdir()
    with training_into(out, enabled=is_first_process()):
        monkeypatch.setenv("RANK", "1")
        assert not is_first_process()
        with training_into(out, enabled=is_first_process()):  # rank 1: no lock, no refusal
            pass
    (out / f"{WRITE_PROBE_PREFIX}abc123").write_text("")
    assert plan_start(out, overwrite=False, resume="auto").action == "fresh"
