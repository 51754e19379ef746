"""Resuming: a changed setting that would change the result is refused with a diff, one that would not is
allowed and recorded; a checkpoint is known by its trainer state, whatever its folder is called."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_train import StopAt, config
from transformers import TrainerCallback

from prefkit.train.recipe import train
from prefkit.train.run.metrics import read_metrics
from prefkit.train.run.resume import ResumeError, check_resume, checkpoint_step, config_changes


def test_config_changes_take_a_deprecated_alias_as_its_current_name():
    saved = {"gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": False}}
    now = {"activation_checkpointing": True, "activation_checkpointing_kwargs": {"use_reentrant": False}}
    assert config_changes(saved, now, defaults={}) == ([], [])
    assert config_changes(saved, {**now, "activation_checkpointing": False}, defaults={})[0] == [
        "activation_checkpointing: true -> false"
    ]


def test_config_changes_sort_result_changing_from_neutral():
    saved = {"learning_rate": 1e-3, "logging_steps": 10, "max_steps": 100, "lora_rank": 8}
    now = {"learning_rate": 1e-3, "logging_steps": 1, "max_steps": 200, "lora_rank": 16, "weight_decay": 0.1}
    blocking, allowed = config_changes(saved, now, defaults={"weight_decay": 0.0})
    assert blocking == ["lora_rank: 8 -> 16", "weight_decay: 0.0 -> 0.1"]
    assert allowed == ["logging_steps: 10 -> 1", "max_steps: 100 -> 200"]
    blocking, _ = config_changes(saved, {**saved, "max_steps": 50}, defaults={})
    assert blocking == ["max_steps: 100 -> 50"]  # training for less is another run
    # A key added to prefkit since the run started counts as its default.
    assert config_changes({}, {"new_key": 1}, defaults={"new_key": 1}) == ([], [])


def _checkpoint(path: Path, step: object = 4, rank: int | None = 8) -> Path:
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if rank is not None:
        (path / "adapter_config.json").write_text(json.dumps({"r": rank}))
    return path


def test_checkpoint_checks_before_any_model_is_loaded(tmp_path):
    now = {"finetuning_type": "lora", "lora_rank": 8}
    assert check_resume(_checkpoint(tmp_path / "my save"), now, {}, tmp_path) == (4, [])
    with pytest.raises(ResumeError, match=r"its adapter has lora_rank 4 .* the config asks for 8"):
        check_resume(_checkpoint(tmp_path / "r4", rank=4), now, {}, tmp_path)
    with pytest.raises(ResumeError, match="it holds a full model, but finetuning_type is lora"):
        check_resume(_checkpoint(tmp_path / "full", rank=None), now, {}, tmp_path)
    with pytest.raises(ResumeError, match="no valid global_step"):
        checkpoint_step(_checkpoint(tmp_path / "bad", step="four"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "trainer_state.json").write_text("{")
    with pytest.raises(ResumeError, match="cannot read the checkpoint's trainer state"):
        checkpoint_step(broken)


class Loaded(TrainerCallback):
    """Records whether training began (and so whether the model was loaded)."""

    began = False

    def on_train_begin(self, args, state, control, **kwargs):
        Loaded.began = True


@pytest.fixture(scope="module")
def stopped(tmp_path_factory, tiny_model_dir):
    """A run stopped after step 3 (checkpoint-2 saved), kept as a template each test copies."""
    tmp = tmp_path_factory.mktemp("stopped")
    cfg = config(tmp, tiny_model_dir, "max_steps=4", "save_steps=2")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[StopAt(3)])
    return tmp


def _copy(stopped: Path, tmp_path: Path) -> Path:
    shutil.copytree(stopped / "run", tmp_path / "run")
    return tmp_path / "run"


def _config(stopped: Path, tmp_path: Path, tiny_model_dir: Path, *overrides: str):
    """The stopped run's config (its data file), with the output folder in ``tmp_path``."""
    return config(
        tmp_path, tiny_model_dir, "save_steps=2", f"train_file={stopped / 'pairs.jsonl'}", *overrides
    )


def test_resume_refuses_a_changed_learning_rate_or_rank_with_a_diff(stopped, tmp_path, tiny_model_dir):
    run = _copy(stopped, tmp_path)
    before = (run / "metrics.jsonl").read_bytes()
    cfg = _config(stopped, tmp_path, tiny_model_dir, "max_steps=4", "learning_rate=1e-3", "lora_rank=4")
    Loaded.began = False
    with pytest.raises(ResumeError) as err:
        train(cfg, callbacks=[Loaded()])
    message = str(err.value)
    assert "learning_rate: 0.005 -> 0.001" in message and "lora_rank: 8 -> 4" in message
    assert "logging_steps" not in message
    assert not Loaded.began and (run / "metrics.jsonl").read_bytes() == before


def test_resume_allows_logging_changes_and_longer_training(stopped, tmp_path, tiny_model_dir):
    run = _copy(stopped, tmp_path)
    cfg = _config(stopped, tmp_path, tiny_model_dir, "max_steps=5", "logging_steps=2", "plot_loss=false")
    result = train(cfg)
    assert result.resumed_from == run / "checkpoint-2" and result.global_step == 5
    record = json.loads((run / "training_config.json").read_text())
    (resumed,) = record["resumed"]
    changed = [line for line in resumed["changed"] if not line.startswith("output_dir")]  # a copy's
    assert resumed["step"] == 2
    assert changed == ["logging_steps: 1 -> 2", "max_steps: 4 -> 5", "plot_loss: true -> false"]
    assert record["config"]["max_steps"] == 5


def test_an_explicit_checkpoint_with_any_name_resumes(stopped, tmp_path, tiny_model_dir):
    """Issue #7: a checkpoint path not named checkpoint-N used to crash on int(...)."""
    run = _copy(stopped, tmp_path)
    saved = tmp_path / "my saved state"
    shutil.copytree(run / "checkpoint-2", saved)
    shutil.copy(run / "training_config.json", tmp_path / "training_config.json")  # its run's config
    cfg = _config(stopped, tmp_path, tiny_model_dir, "max_steps=4", f"resume_from_checkpoint={saved}")
    cfg.output_dir = str(tmp_path / "elsewhere")
    result = train(cfg)
    assert result.resumed_from == saved and result.global_step == 4
    metrics = read_metrics(tmp_path / "elsewhere" / "metrics.jsonl")
    assert [r["step"] for r in metrics if "loss" in r] == [3, 4]
