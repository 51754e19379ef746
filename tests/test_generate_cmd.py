"""`prefkit generate`: prompts in every accepted shape, bad lines named, and a run that is killed and
rerun ends with every prompt exactly once and the replies an uninterrupted run gives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prefkit.data.examples import Message
from prefkit.infer.batch import PART_SUFFIX, GenerateError, generate_file, read_prompts
from prefkit.infer.generate import generate
from prefkit.infer.sampling import SamplingSettings
from prefkit.model.inference import load_for_inference

MAX_NEW = 24


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_for_inference(str(tiny_model_dir), dtype="fp32")


def _write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _prompts(n: int) -> list[dict]:
    return [{"id": f"p{i}", "prompt": f"Question {i}: what is data science? 質問{i}"} for i in range(n)]


def test_prompt_shapes_and_bad_lines(tmp_path):
    records = [
        {"prompt": "plain text"},
        {"prompt": "with a system message", "system": "Be brief."},
        {"prompt": [{"role": "user", "content": "chat prompt"}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "reference"}]},
        {"prompt": "pref", "chosen": "good", "rejected": "bad"},
        {"conversations": [{"from": "human", "value": "sharegpt q"}, {"from": "gpt", "value": "a"}]},
        {"instruction": "alpaca q", "input": "", "output": "a"},
        {"prompt": 5},
        {"messages": [{"role": "assistant", "content": "only a reply"}]},
        {"nothing": "here"},
    ]
    path = _write_jsonl(tmp_path / "p.jsonl", records)
    with path.open("a") as f:
        f.write("{broken json\n")
    items, problems = read_prompts(path)
    assert [i.messages[-1].content for i in items] == [
        "plain text", "with a system message", "chat prompt", "q", "pref", "sharegpt q", "alpaca q",
    ]  # fmt: skip
    assert items[1].messages[0] == Message("system", "Be brief.")
    assert [i.location.line for i in items] == [1, 2, 3, 4, 5, 6, 7]
    assert [str(p).split(":")[1] for p in problems] == ["8", "9", "10", "11"]
    assert all(str(p).startswith(f"{path}:") for p in problems)
    assert "expected text or a list of messages, got int" in str(
        problems[0]
    ) and "end with a user turn" in str(problems[1])
    assert "no prompt found" in str(problems[2]) and "malformed JSON" in str(problems[3])


def test_bad_lines_stop_the_run_unless_skipped(loaded, tmp_path):
    path = _write_jsonl(tmp_path / "p.jsonl", [*_prompts(2), {"prompt": ""}, {"prompt": ["x"]}])
    out = tmp_path / "out.jsonl"
    settings = SamplingSettings(max_new_tokens=4)
    with pytest.raises(GenerateError, match=r"(?s)1 record\(s\).*p\.jsonl:4"):
        generate_file(loaded, path, out, settings=settings)
    assert not out.exists() and not Path(str(out) + PART_SUFFIX).exists()
    result = generate_file(loaded, path, out, settings=settings, skip_bad=True)
    assert result.total == 3 and [str(p).split(":")[1] for p in result.skipped] == ["4"]
    with pytest.raises(GenerateError, match="already exists"):
        generate_file(loaded, path, out, settings=settings)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "prefkit", "generate", *args]


@pytest.mark.slow
def test_killed_run_resumes_without_duplicates_or_losses(loaded, tiny_model_dir, tmp_path):
    prompts = _prompts(40)
    source = _write_jsonl(tmp_path / "prompts.jsonl", prompts)
    out = tmp_path / "out.jsonl"
    part = Path(str(out) + PART_SUFFIX)
    args = _cli(
        "--model", str(tiny_model_dir), "--input", str(source), "--output", str(out),
        "--dtype", "fp32", "--max-new-tokens", str(MAX_NEW), "--batch-size", "2",
    )  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None:
        if part.exists() and len(part.read_text().splitlines()) >= 6:  # the header and 5+ replies
            break
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)  # no cleanup at all, as when a machine dies
    first.wait()
    assert not out.exists()
    done_before = len(part.read_text().splitlines()) - 1
    assert 5 <= done_before < len(prompts), "the kill did not land mid-run"
    with part.open("a") as f:  # the crash also tore the line being written
        f.write('{"_key": "line 40", "reply": "half')

    second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert f"resuming: {done_before} of {len(prompts)}" in second.stderr
    assert not part.exists()
    results = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in results] == list(range(1, len(prompts) + 1))  # each once, in input order
    assert [r["id"] for r in results] == [p["id"] for p in prompts]

    expected = generate(
        loaded.model,
        loaded.encoder(),
        [[Message("user", p["prompt"])] for p in prompts],
        settings=SamplingSettings(max_new_tokens=MAX_NEW),
    )
    assert [r["reply"].strip() for r in results] == expected
    assert all(r["completion_tokens"] >= 1 and r["prompt_tokens"] > 5 for r in results)


def test_interrupted_run_keeps_what_finished_and_refuses_other_settings(loaded, tmp_path):
    source = _write_jsonl(tmp_path / "prompts.jsonl", _prompts(6))
    out = tmp_path / "out.jsonl"
    settings = SamplingSettings(max_new_tokens=6)
    seen = []

    def interrupt(prompts: int, tokens: int) -> None:
        seen.append(prompts)
        if sum(seen) >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_file(loaded, source, out, settings=settings, batch_size=1, on_done=interrupt)
    part = Path(str(out) + PART_SUFFIX)
    assert len(part.read_text().splitlines()) == 3  # header + the 2 finished
    with pytest.raises(GenerateError, match=r"another run.*settings"):
        generate_file(loaded, source, out, settings=SamplingSettings(max_new_tokens=7))
    starts = []
    result = generate_file(
        loaded, source, out, settings=settings, on_start=lambda t, d: starts.append((t, d))
    )
    assert starts == [(6, 2)] and result.generated == 4 and result.resumed == 2
    assert len(out.read_text().splitlines()) == 6
