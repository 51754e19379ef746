"""`prefkit compare` on two real tiny runs: a table of final and best metrics, the settings that differ,
and overlaid plots."""

from __future__ import annotations

import pytest
from toydata import toy_pairs
from typer.testing import CliRunner

from prefkit.cli import app
from prefkit.config import load_config
from prefkit.evaluate.compare import CompareError, compare_runs, final_and_best
from prefkit.train.recipe import train
from prefkit.train.run.metrics import read_metrics


def _run(tmp_path, model, name, *overrides):
    config = load_config(
        None,
        [
            f"model_name_or_path={model}",
            f"train_file={toy_pairs(tmp_path / 'pairs.jsonl', n=20)}",
            f"output_dir={tmp_path / name}",
            "stage=dpo",
            "lora_rank=4",
            "learning_rate=5e-3",
            "per_device_train_batch_size=4",
            "max_steps=4",
            "logging_steps=1",
            "cutoff_len=64",
            "val_size=4",
            "eval_strategy=steps",
            "eval_steps=2",
            "report_to=none",
            *overrides,
        ],
    )
    return train(config).output_dir


@pytest.mark.slow
def test_compare_two_runs(tmp_path, tiny_model_dir):
    dpo = _run(tmp_path, tiny_model_dir, "dpo", "pref_loss=sigmoid")
    simpo = _run(tmp_path, tiny_model_dir, "simpo", "pref_loss=simpo", "learning_rate=1e-3")
    out = tmp_path / "report" / "ab.md"
    text = compare_runs([dpo, simpo], out)
    assert out.read_text(encoding="utf-8") == text
    header = text.splitlines()[2]
    assert header == "| | dpo | simpo |"

    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "| finished | finished |" in rows["status"] and "| 4 | 4 |" in rows["steps"]
    # the table's final and best values are the runs' own
    dpo_loss = [r["loss"] for r in read_metrics(dpo / "metrics.jsonl") if "loss" in r]
    assert f"{dpo_loss[-1]:.4g} (best {min(dpo_loss):.4g})" in rows["loss"]
    assert "eval_rewards/accuracies" in rows
    # settings that differ: the method and the learning rate, not the output folder
    section = text.split("## Settings that differ")[1]
    assert "| pref_loss | sigmoid | simpo |" in section
    assert "| learning_rate | 0.005 | 0.001 |" in section
    assert "output_dir" not in section and "| seed |" not in section
    for name in ("ab_loss.png", "ab_rewards_margins.png", "ab_rewards_accuracies.png"):
        assert (out.parent / name).stat().st_size > 1000, name
        assert f"]({name})" in text

    with pytest.raises(CompareError, match="will not overwrite"):
        compare_runs([dpo, simpo], out)
    compare_runs([dpo, simpo], out, force=True)
    with pytest.raises(CompareError, match=r"no metrics\.jsonl"):
        compare_runs([tmp_path / "report"], tmp_path / "x.md")

    cli = CliRunner().invoke(app, ["compare", str(dpo), str(simpo), "--output", str(tmp_path / "cli.md")])
    assert cli.exit_code == 0, cli.output
    assert "| pref_loss | sigmoid | simpo |" in cli.output and (tmp_path / "cli_loss.png").exists()


def test_final_and_best_direction():
    records = [
        {"step": 1, "loss": 0.7, "rewards/accuracies": 0.5, "eval_loss": 0.8},
        {"step": 2, "loss": 0.3, "rewards/accuracies": 1.0},
        {"step": 3, "loss": 0.4, "rewards/accuracies": 0.75, "eval_loss": 0.6, "eval_samples": "| table |"},
    ]
    assert final_and_best(records) == {
        "loss": (0.4, 0.3),
        "rewards/accuracies": (0.75, 1.0),
        "eval_loss": (0.6, 0.6),
    }
