"""benchmarks/gpu_check.py where there is no GPU: it says so and writes nothing; and the pieces of its CUDA
path that run anywhere -- the time budget, a timed-out part killed with its children, the figures of a
training run -- with vs_trl.py's pairs lengthened for ``--length``."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scriptkit import load_script
from tiny import build_tokenizer
from toydata import toy_pairs

REPO = Path(__file__).parent.parent


gpu_check = load_script("benchmarks/gpu_check.py")


@pytest.mark.slow
def test_without_cuda_it_says_so_and_writes_nothing(tmp_path):
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--out", str(out)],
        env=dict(os.environ, CUDA_VISIBLE_DEVICES=""),  # no CUDA even on a GPU machine
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.splitlines()
    assert line.startswith("gpu_check: no CUDA GPU here") and "no results written" in line
    assert "pytest -m gpu" in line and "QLoRA" in line and "--length 1024" in line
    assert not out.exists()


def test_the_budget_passes_unused_time_on():
    total = sum(gpu_check.WEIGHTS.values())
    first = next(iter(gpu_check.WEIGHTS))
    assert gpu_check.part_timeout(total, first) == pytest.approx(gpu_check.WEIGHTS[first])
    assert gpu_check.part_timeout(123.0, "race") == pytest.approx(123.0)  # the last part gets what is left


def _gone(pid: int) -> bool:
    """The process has exited (a zombie nobody has reaped yet counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in {"Z", "X"}


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_a_part_that_runs_out_of_time_is_killed_with_its_children():
    script = (
        "import subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        "print(child.pid, flush=True); time.sleep(60)"
    )
    started = time.perf_counter()
    part = gpu_check.run_part([sys.executable, "-c", script], timeout=2)
    assert part["status"] == "timed_out" and time.perf_counter() - started < 20
    grandchild = int(part["output"].split()[0])
    deadline = time.monotonic() + 5
    while not _gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(grandchild)


def test_a_part_passes_or_fails_by_its_exit_status():
    assert gpu_check.run_part([sys.executable, "-c", "print('RESULT {\"x\": 1}')"], 60)["status"] == "passed"
    failed = gpu_check.run_part([sys.executable, "-c", "raise SystemExit(3)"], 60)
    assert failed["status"] == "failed" and failed["returncode"] == 3
    assert gpu_check.result_line('noise\nRESULT {"x": 1}\nRESULT {"x": 2}\n') == {"x": 2}


def test_junit_counts(tmp_path):
    xml = tmp_path / "junit.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest" tests="6" failures="1" errors="0" skipped="2">'
        "</testsuite></testsuites>"
    )
    assert gpu_check.junit_counts(xml) == {"tests": 6, "failures": 1, "errors": 0, "skipped": 2, "passed": 3}
    assert gpu_check.junit_counts(tmp_path / "none.xml") is None


@pytest.mark.slow
def test_train_figures_measure_the_run(tmp_path, tiny_model_dir):
    """The QLoRA part's measurements, on the CPU and unquantised: the step times, the step-1 loss (ln 2:
    LoRA starts as the identity), no 4-bit layers, no CUDA memory."""
    figures = gpu_check.train_figures(
        [
            f"model_name_or_path={tiny_model_dir}",
            f"train_file={toy_pairs(tmp_path / 'pairs.jsonl')}",
            "eval_file=null",
            "max_steps=3",
            "bf16=false",
            "cutoff_len=64",
        ]
    )
    assert figures["steps"] == 3 and figures["seconds_per_step"] > 0 and figures["first_step_seconds"] > 0
    assert figures["step1_loss"] == pytest.approx(math.log(2), abs=1e-6) and figures["step1_loss_is_ln2"]
    assert figures["losses_finite"] and figures["four_bit_layers"] == 0
    assert figures["peak_memory_gib"] is None


def test_lengthened_pairs_fit_the_length_without_truncation(tmp_path):
    from prefkit.data.formats import parse_file
    from prefkit.data.tokenize import ChatEncoder

    vs_trl = load_script("benchmarks/vs_trl.py")
    tokenizer = build_tokenizer()
    rows = vs_trl.lengthened_pairs("builtin:tutor_train", tokenizer, 256, limit=4)
    original = parse_file("builtin:tutor_train", stage="dpo").examples[:4]
    assert len(rows) == 4
    encoder = ChatEncoder(tokenizer, None, cutoff_len=10**9)
    budget = 256 - vs_trl.LENGTH_MARGIN
    for row, before in zip(rows, original, strict=True):
        assert (row["chosen"], row["rejected"]) == (before.chosen, before.rejected)
        assert row["prompt"][-1]["content"].endswith("\n\n" + before.prompt[-1].content)  # the question last
    path = tmp_path / "lengthened.jsonl"  # a file prefkit parses, as the race does
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    for example in parse_file(path, stage="dpo").examples:
        encoded = encoder.encode_pair(example)
        tokens = encoded.full_prompt_len + max(encoded.full_chosen_len, encoded.full_rejected_len)
        assert budget - 4 <= tokens <= budget  # as long as fits, to within a character's tokens


QLORA_FIGURES = {
    "four_bit_layers": 14,
    "losses_finite": True,
    "step1_loss": math.log(2),
    "step1_loss_is_ln2": True,
}


def test_a_qlora_run_that_is_not_one_is_a_problem():
    assert gpu_check.qlora_problems(QLORA_FIGURES) == []
    unquantised = {**QLORA_FIGURES, "four_bit_layers": 0}
    assert gpu_check.qlora_problems(unquantised) == ["no 4-bit layers: the model was not quantised"]
    off = {**QLORA_FIGURES, "step1_loss": 0.75, "step1_loss_is_ln2": False}
    assert "step-1 loss 0.75, not ln 2" in gpu_check.qlora_problems(off)[0]


def _on_fake_cuda(monkeypatch, model_status: str) -> list[tuple[str, float]]:
    """main()'s CUDA path with the parts replaced: which ran, with what timeout."""
    import torch

    ran: list[tuple[str, float]] = []
    model = {"model": "m", "path": "/m", "template": "gemma", "resolve_seconds": 1.0}
    qlora = {"model": "m", "seconds_per_step": 0.1, "peak_memory_gib": 1.0, **QLORA_FIGURES}

    def part_tests(timeout: float) -> dict:
        ran.append(("tests", timeout))
        counts = {"tests": 1, "passed": 1, "failures": 0, "errors": 0, "skipped": 0}
        return {"status": "passed", "wall_seconds": 0.1, "figures": counts, "output": "1 passed"}

    def part_child(name: str, extra: list[str], timeout: float) -> dict:
        ran.append((name, timeout))
        if name == "model":
            figures = model if model_status == "passed" else None
            return {"status": model_status, "wall_seconds": 0.1, "figures": figures, "output": "resolving"}
        assert extra[extra.index("--template") + 1] == "gemma"
        return {"status": "passed", "wall_seconds": 0.1, "figures": qlora, "output": ""}

    def part_race(model: str, template: str | None, timeout: float) -> dict:
        ran.append(("race", timeout))
        assert (model, template) == ("m", "gemma")
        return {"status": "passed", "wall_seconds": 0.1, "figures": None, "output": ""}

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpu_check, "machine", lambda: {"gpu": "fake"})
    monkeypatch.setattr(gpu_check, "part_tests", part_tests)
    monkeypatch.setattr(gpu_check, "part_child", part_child)
    monkeypatch.setattr(gpu_check, "part_race", part_race)
    return ran


def test_on_cuda_each_part_gets_its_share_and_the_results_say_how_it_went(tmp_path, monkeypatch, capsys):
    ran = _on_fake_cuda(monkeypatch, "passed")
    out = tmp_path / "results.json"
    assert gpu_check.main(["--out", str(out), "--budget-s", "540"]) == 0
    assert [name for name, _ in ran] == list(gpu_check.WEIGHTS)
    weights = list(gpu_check.WEIGHTS.values())
    for i, (name, timeout) in enumerate(ran):
        # Its weight's share of the time left, all 540 s here: the parts before it took none of theirs.
        assert timeout == pytest.approx(540 * weights[i] / sum(weights[i:]), abs=1), name
    assert ran[-1][1] == pytest.approx(540, abs=1)
    report = json.loads(out.read_text())
    assert report["machine"] == {"gpu": "fake"} and report["budget_seconds"] == 540
    assert [(p["name"], p["status"]) for p in report["parts"]] == [(n, "passed") for n in gpu_check.WEIGHTS]
    assert report["parts"][0]["output_tail"] == ["1 passed"] and "output" not in report["parts"][0]
    table = capsys.readouterr().out
    assert "m with template gemma" in table and "0.1 s/step" in table and f"wrote {out}" in table


def test_on_cuda_without_a_model_the_runs_are_skipped(tmp_path, monkeypatch):
    ran = _on_fake_cuda(monkeypatch, "timed_out")
    out = tmp_path / "results.json"
    assert gpu_check.main(["--out", str(out)]) == 1
    assert [name for name, _ in ran] == ["tests", "model"]
    parts = json.loads(out.read_text())["parts"]
    assert [(p["name"], p["status"]) for p in parts] == [
        ("tests", "passed"),
        ("model", "timed_out"),
        ("qlora", "skipped"),
        ("race", "skipped"),
    ]
    assert parts[1]["output_tail"] == ["resolving"]
