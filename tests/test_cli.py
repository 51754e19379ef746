"""The `prefkit` command, run in-process through typer and once as the installed console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prefkit.cli import app

runner = CliRunner()
CONFIGS = Path(__file__).parent / "fixtures" / "configs"


def test_env_json():
    result = runner.invoke(app, ["env", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"python", "torch", "transformers", "peft", "accelerate"} <= set(report["versions"])
    assert report["device"]["device"] in {"cpu", "cuda"} and "cache_dir" in report


def test_data_check_clean_file_exits_0():
    result = runner.invoke(app, ["data", "check", "builtin:sample_pairs"])
    assert result.exit_code == 0, result.output
    assert "format prompt-text (dpo)" in result.stdout and "records 8, usable 8" in result.stdout


def test_data_check_reports_every_problem_and_exits_1(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(
        b'{"prompt": "q", "chosen": "a", "rejected": "b"}\n'
        b'{"prompt": "q2", "chosen": 3, "rejected": "b"}\n'
        b'{"prompt": "q3", "chosen": "\xff", "rejected": "b"}\n'
        b'{"prompt": "q4", "chosen": "a", "rej'
    )
    result = runner.invoke(app, ["data", "check", str(bad), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    where = {p["location"]: p["kind"] for p in report["problems"]}
    assert where == {f"{bad}:2": "non_string", f"{bad}:3": "encoding", f"{bad}:4": "truncated"}
    assert report["usable"] == 1 and report["ok"] is False


def test_data_check_with_model_measures_tokens(tiny_model_dir):
    result = runner.invoke(
        app, ["data", "check", "builtin:sample_pairs", "--model", str(tiny_model_dir), "--cutoff-len", "64"]
    )
    assert result.exit_code == 0, result.output  # over cutoff is a warning, not a failure
    assert "tokens (before truncation)" in result.stdout
    assert "over cutoff_len 64:" in result.stdout


def test_data_check_missing_file_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["data", "check", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 2
    assert "nope.jsonl" in result.output and "Traceback" not in result.output


def test_convert_then_check_roundtrip(tmp_path):
    out = tmp_path / "pairs.json"
    result = runner.invoke(
        app, ["data", "convert", "builtin:sample_pairs", str(out), "--to", "sharegpt-pair"]
    )
    assert result.exit_code == 0, result.output
    assert "wrote 8 examples" in result.stdout
    again = runner.invoke(app, ["data", "convert", "builtin:sample_pairs", str(out), "--to", "sharegpt-pair"])
    assert again.exit_code == 2 and "--force" in again.output  # nothing is overwritten by accident
    check = runner.invoke(app, ["data", "check", str(out)])
    assert check.exit_code == 0 and "format sharegpt-pair" in check.stdout


def test_config_shows_sources_and_errors():
    ok = runner.invoke(app, ["config", str(CONFIGS / "seed_simpo.yaml"), "learning_rate=1e-5"])
    assert ok.exit_code == 0, ok.output
    lines = {line.split(":")[0]: line for line in ok.stdout.splitlines()}
    assert "# command line" in lines["learning_rate"] and "1e-05" in lines["learning_rate"]
    assert "seed_simpo.yaml:20" in lines["pref_beta"]
    bad = runner.invoke(app, ["config", str(CONFIGS / "seed_simpo.yaml"), "pref_bta=1"])
    assert bad.exit_code == 2 and "did you mean 'pref_beta'?" in bad.output


@pytest.mark.slow
def test_console_script_runs():
    exe = Path(sys.executable).with_name("prefkit")
    result = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "data" in result.stdout


def test_a_prefkit_bug_exits_70_with_a_short_note_and_the_traceback_in_a_log(tmp_path, monkeypatch):
    import prefkit.data.load

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setenv("PREFKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(prefkit.data.load, "check_data", broken)  # stands in for a real bug of ours
    result = runner.invoke(app, ["data", "check", "builtin:sample_pairs"])
    assert result.exit_code == 70
    assert "internal error: RuntimeError: boom" in result.output and "This is a prefkit bug" in result.output
    assert "Traceback" not in result.output
    (log,) = (tmp_path / "logs").iterdir()
    assert str(log) in result.output and "RuntimeError: boom" in log.read_text()
    verbose = runner.invoke(app, ["--verbose", "data", "check", "builtin:sample_pairs"])
    assert verbose.exit_code == 70 and "Traceback" in verbose.output


def test_ctrl_c_exits_130(monkeypatch):
    import prefkit.data.load

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prefkit.data.load, "check_data", interrupted)
    result = runner.invoke(app, ["data", "check", "builtin:sample_pairs"])
    assert result.exit_code == 130 and "interrupted" in result.output


def test_train_exits_1_for_bad_data_and_2_for_a_bad_config(tmp_path, tiny_model_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "chosen": "same", "rejected": "same"}\n')
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"model_name_or_path: {tiny_model_dir}\ntrain_file: {bad}\noutput_dir: {tmp_path / 'out'}\n"
    )
    result = runner.invoke(app, ["train", str(cfg)])
    assert result.exit_code == 1, result.output
    assert f"{bad}:1: chosen is identical to rejected" in result.output
    result = runner.invoke(app, ["train", str(cfg), "learning_rate=.inf"])
    assert result.exit_code == 2 and "command line: learning_rate: got .inf -- expected a finite number" in (
        result.output
    )
    assert not (tmp_path / "out").exists()
