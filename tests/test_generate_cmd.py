"""`prefkit generate`: prompts in every accepted shape, bad lines named, an output that is the input
refused, and a run that is killed and rerun ends with every prompt exactly once and exactly the replies
(greedy and seeded) an uninterrupted run gives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from prefkit.cli import app
from prefkit.data.examples import Message
from prefkit.infer.batch import PART_SUFFIX, GenerateError, check_files, generate_file
from prefkit.infer.prompts import read_prompts
from prefkit.infer.sampling import SamplingSettings
from prefkit.model.inference import load_for_inference

MAX_NEW = 24
SEEDED = SamplingSettings(max_new_tokens=MAX_NEW, do_sample=True, temperature=1.0, seed=5)


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
        "--model", str(tiny_model_dir), "--input", str(source), "--output", str(out), "--dtype", "fp32",
        "--max-new-tokens", str(MAX_NEW), "--batch-size", "2", "--temperature", "1", "--seed", "5",
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
    complete = part.read_text()
    done_before = (complete[: complete.rfind("\n") + 1].count("\n") - 1) // 2 * 2  # whole groups of 2
    assert 4 <= done_before < len(prompts), "the kill did not land mid-run"
    with part.open("a") as f:  # the crash also tore the line being written
        f.write('{"_key": "line 40", "reply": "half')

    second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert f"resuming: {done_before} of {len(prompts)}" in second.stderr
    assert not part.exists()
    results = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in results] == list(range(1, len(prompts) + 1))  # each once, in input order
    assert [r["id"] for r in results] == [p["id"] for p in prompts]
    assert all(r["completion_tokens"] >= 1 and r["prompt_tokens"] > 5 for r in results)

    # the sampled replies of one uninterrupted run (seed + position each, same groups)
    torch.set_num_threads(1)  # as the command ran: OMP_NUM_THREADS=1
    uninterrupted = tmp_path / "uninterrupted.jsonl"
    generate_file(loaded, source, uninterrupted, settings=SEEDED, batch_size=2)
    expected = [json.loads(line) for line in uninterrupted.read_text(encoding="utf-8").splitlines()]
    assert [r["reply"] for r in results] == [r["reply"] for r in expected]


class _Logits:
    """Every forward pass's logits of a real model, recorded by a forward hook (observed, not changed)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.seen: list[torch.Tensor] = []
        self.handle = model.register_forward_hook(lambda _m, _args, out: self.seen.append(out.logits.clone()))

    def __enter__(self) -> list[torch.Tensor]:
        return self.seen

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


@pytest.mark.parametrize(
    "settings", [SamplingSettings(max_new_tokens=MAX_NEW), SEEDED], ids=["greedy", "seeded"]
)
def test_resumed_run_computes_exactly_what_an_uninterrupted_run_does(loaded, tmp_path, settings):
    """A row's logits depend in the last bits on its batch neighbours: the resumed run must redo whole
    groups with the neighbours they had, so its forward passes are bit for bit the uninterrupted run's."""
    records = [{"prompt": f"Question {i}: " + "what is data science? " * (1 + i % 4)} for i in range(10)]
    source = _write_jsonl(tmp_path / "prompts.jsonl", records)  # lengths differ: rows are left-padded
    uninterrupted, out = tmp_path / "uninterrupted.jsonl", tmp_path / "out.jsonl"
    with _Logits(loaded.model) as full:
        generate_file(loaded, source, uninterrupted, settings=settings, batch_size=3)

    saved = []

    def interrupt(prompts: int, tokens: int) -> None:
        saved.append(prompts)
        if sum(saved) >= 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_file(loaded, source, out, settings=settings, batch_size=3, on_done=interrupt)
    part = Path(str(out) + PART_SUFFIX)
    lines = part.read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(lines) == 1 + 6  # two whole groups of 3
    # a kill that tore the second group's write: its last line half there, the group incomplete
    part.write_text("".join(lines[:-1]) + lines[-1][:40], encoding="utf-8")

    with _Logits(loaded.model) as resumed:
        result = generate_file(loaded, source, out, settings=settings, batch_size=3)
    assert (result.resumed, result.generated) == (3, 7)  # the torn group is redone whole
    assert len(resumed) < len(full)
    tail = full[len(full) - len(resumed) :]
    assert all(torch.equal(a, b) for a, b in zip(resumed, tail, strict=True))
    replies = [json.loads(line)["reply"] for line in out.read_text(encoding="utf-8").splitlines()]
    assert replies == [json.loads(line)["reply"] for line in uninterrupted.read_text().splitlines()]


def test_output_that_is_the_input_is_refused(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = _write_jsonl(tmp_path / "prompts.jsonl", _prompts(3))
    original = source.read_bytes()
    (tmp_path / "link.jsonl").symlink_to(source)
    os.link(source, tmp_path / "hard.jsonl")
    command = [
        "generate",
        "--model",
        str(tiny_model_dir),
        "--input",
        "prompts.jsonl",
        "--max-new-tokens",
        "2",
    ]
    for output in ("prompts.jsonl", "./prompts.jsonl", str(source), "link.jsonl", "hard.jsonl"):
        result = CliRunner().invoke(app, [*command, "--output", output, "--force"])
        assert result.exit_code not in (0, 70), result.output
        assert "is the input file" in result.output, result.output
    with pytest.raises(GenerateError, match="is the input file"):  # OUT.part would be the input
        check_files(tmp_path / "x.part", tmp_path / "x", skip_bad=False, force=True)
    assert source.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hard.jsonl", "link.jsonl", "prompts.jsonl"]


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
        generate_file(loaded, source, out, settings=SamplingSettings(max_new_tokens=7), batch_size=1)
    with pytest.raises(GenerateError, match=r"another run.*batch_size"):  # other groups, other replies
        generate_file(loaded, source, out, settings=settings, batch_size=2)
    starts = []
    result = generate_file(
        loaded, source, out, settings=settings, batch_size=1, on_start=lambda t, d: starts.append((t, d))
    )
    assert starts == [(6, 2)] and result.generated == 4 and result.resumed == 2
    assert len(out.read_text().splitlines()) == 6


def test_a_reply_that_cannot_be_sampled_stops_the_run_and_is_never_saved(tiny_model_dir, tmp_path):
    """NaN logits end a row with finish_reason "error": generate stops naming the prompt, writes no
    output and saves no empty reply in the .part file as if it were an answer."""
    broken = load_for_inference(str(tiny_model_dir), dtype="fp32")
    with torch.no_grad():
        broken.model.get_output_embeddings().weight.fill_(float("nan"))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Hello"}\n{"prompt": "Why?"}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    with pytest.raises(GenerateError, match=r"prompts.jsonl:1: the reply could not be generated"):
        generate_file(broken, prompts, out, settings=SamplingSettings(max_new_tokens=4))
    assert not out.exists()
    part = out.with_name(out.name + PART_SUFFIX)
    saved = part.read_text(encoding="utf-8").splitlines()[1:] if part.exists() else []
    assert saved == []


def test_a_seed_that_would_overflow_for_later_prompts_is_refused_before_any_is_generated(loaded, tmp_path):
    from prefkit.infer.sampling import MAX_SEED

    prompts = _write_jsonl(tmp_path / "in.jsonl", _prompts(3))
    out = tmp_path / "out.jsonl"
    settings = SamplingSettings(max_new_tokens=2, do_sample=True, seed=MAX_SEED - 1)
    with pytest.raises(GenerateError, match=r"seeds run to seed \+ 2, over"):
        generate_file(loaded, prompts, out, settings=settings)
    assert not out.exists() and not out.with_name(out.name + PART_SUFFIX).exists()
