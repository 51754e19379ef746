"""`prefkit export`: the merged folder loads with plain transformers (no prefkit, no peft importable),
replies greedily as the unmerged model does, and a weighted combination is exactly the weighted sum of
the adapters' weight changes; the output may be relative, --force replaces only an earlier export,
never the working folder, and what a killed export left behind is cleaned up by the next one."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from typer.testing import CliRunner

from prefkit.cli import app
from prefkit.data.examples import Message
from prefkit.infer.export import EXPORT_RECORD, ExportError, export_model
from prefkit.infer.generate import generate
from prefkit.infer.sampling import SamplingSettings
from prefkit.model.adapters import parse_adapters
from prefkit.model.inference import load_for_inference

PROMPTS = ["hello", "What is data science?", "機械学習とは？"]
MAX_NEW = 16

# Run in a child interpreter that can import transformers and torch but neither prefkit nor peft.
PLAIN_LOAD = """
import importlib.util, json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
blocked = [name for name in ("prefkit", "peft") if importlib.util.find_spec(name) is not None]
folder, prompts, max_new = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder)
replies = []
for prompt in prompts:
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_dict=True
    )["input_ids"]
    out = model.generate(torch.tensor([ids]), max_new_tokens=max_new, do_sample=False)
    replies.append(tokenizer.decode(out[0, len(ids):], skip_special_tokens=True).strip())
print(json.dumps({"importable": blocked, "dtype": str(model.dtype), "replies": replies}))
"""


def _plain_env(tmp_path: Path) -> dict[str, str]:
    """A site-packages with everything but prefkit and peft (and no .pth files that could add them)."""
    mirror = tmp_path / "site"
    if mirror.is_dir():
        return _env(mirror)
    mirror.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        name = entry.name.lower()
        if name.startswith(("prefkit", "peft", "__editable__")) or name.endswith(".pth"):
            continue
        (mirror / entry.name).symlink_to(entry)
    return _env(mirror)


def _env(mirror: Path) -> dict[str, str]:
    return {"PYTHONPATH": str(mirror), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _load_plainly(folder: Path, tmp_path: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-S", "-c", PLAIN_LOAD, str(folder), json.dumps(PROMPTS), str(MAX_NEW)],
        env=_plain_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _unmerged_replies(model_dir: Path, adapter: Path) -> tuple[list[str], list[str]]:
    """Greedy replies of the model with the adapter attached (not merged), and of the base alone."""
    loaded = load_for_inference(str(model_dir), parse_adapters([f"x={adapter}"]), dtype="fp32")
    prompts = [[Message("user", p)] for p in PROMPTS]
    settings = SamplingSettings(max_new_tokens=MAX_NEW)
    with_adapter = generate(loaded.model, loaded.encoder("x"), prompts, settings=settings)
    with loaded.model.disable_adapter():
        base = generate(loaded.model, loaded.encoder("x"), prompts, settings=settings)
    return with_adapter, base


@pytest.mark.slow
def test_exported_model_loads_without_prefkit_or_peft_and_replies_the_same(
    tiny_model_dir, tiny_adapters, tmp_path
):
    out = tmp_path / "merged"
    handlers = logging.getLogger().handlers[:]
    command = ["export", "--model", str(tiny_model_dir), "--adapter", str(tiny_adapters["a"])]
    result = CliRunner().invoke(app, [*command, "--output", str(out), "--dtype", "fp32"])
    logging.getLogger().handlers[:] = handlers  # the command logged to the runner's stream, closed now
    assert result.exit_code == 0, result.output
    files = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json"} <= files
    assert not {"adapter_config.json", "adapter_model.safetensors"} & files
    assert (
        "chat_template" in json.loads((out / "tokenizer_config.json").read_text())
        or (out / "chat_template.jinja").is_file()
    )
    generation = json.loads((out / "generation_config.json").read_text())
    im_end = 2  # the tiny tokenizer's <|im_end|>, its EOS and the template's end of turn
    assert generation["eos_token_id"] in (im_end, [im_end])

    plain = _load_plainly(out, tmp_path)
    assert plain["importable"] == [] and plain["dtype"] == "torch.float32"
    unmerged, base = _unmerged_replies(tiny_model_dir, tiny_adapters["a"])
    assert plain["replies"] == unmerged
    assert base != unmerged  # the adapter matters: the equality above is not base == base


def _delta(adapter: Path, module: str) -> torch.Tensor:
    """B @ A * alpha / r of one module, read from the adapter's own files."""
    config = json.loads((adapter / "adapter_config.json").read_text())
    weights = load_file(adapter / "adapter_model.safetensors")
    a = weights[f"base_model.model.{module}.lora_A.weight"]
    b = weights[f"base_model.model.{module}.lora_B.weight"]
    return b @ a * (config["lora_alpha"] / config["r"])


def test_weighted_combination_is_the_weighted_sum_of_the_adapters(tiny_model_dir, tiny_adapters, tmp_path):
    module = "model.layers.1.self_attn.v_proj"
    out = export_model(
        str(tiny_model_dir),
        parse_adapters([f"a={tiny_adapters['a']}", f"b={tiny_adapters['b']}"]),  # ranks 4 and 8
        tmp_path / "combined",
        weights=[0.7, 0.3],
        dtype="fp32",
    ).output
    merged = load_file(out / "model.safetensors")[f"{module}.weight"]
    base = load_file(tiny_model_dir / "model.safetensors")[f"{module}.weight"]
    expected = base + 0.7 * _delta(tiny_adapters["a"], module) + 0.3 * _delta(tiny_adapters["b"], module)
    torch.testing.assert_close(merged, expected, rtol=0, atol=1e-6)
    record = json.loads((out / "prefkit_export.json").read_text())
    assert [(a["name"], a["weight"], a["rank"]) for a in record["adapters"]] == [("a", 0.7, 4), ("b", 0.3, 8)]
    assert record["combination"] == "cat"

    with pytest.raises(ExportError, match="linear"):  # peft's linear needs equal ranks
        export_model(
            str(tiny_model_dir),
            parse_adapters([f"a={tiny_adapters['a']}", f"b={tiny_adapters['b']}"]),
            tmp_path / "linear",
            weights=[0.5, 0.5],
            combination="linear",
        )
    assert not (tmp_path / "linear").exists()


def test_dtype_and_the_folders_export_will_not_touch(tiny_model_dir, tiny_adapters, tmp_path):
    adapters = parse_adapters([str(tiny_adapters["a"])])
    out = export_model(str(tiny_model_dir), adapters, tmp_path / "bf16", dtype="bf16").output
    with safe_open(out / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}  # noqa: SIM118

    with pytest.raises(ExportError, match="not empty"):
        export_model(str(tiny_model_dir), adapters, out, dtype="bf16")
    export_model(str(tiny_model_dir), adapters, out, dtype="fp32", force=True)
    with safe_open(out / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}  # noqa: SIM118
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left

    adapter_files = sorted(p.name for p in tiny_adapters["a"].iterdir())
    for inside in (tiny_adapters["a"], tiny_adapters["a"] / "sub", tiny_model_dir):
        with pytest.raises(ExportError, match="overlaps"):
            export_model(str(tiny_model_dir), adapters, inside, force=True)
    assert sorted(p.name for p in tiny_adapters["a"].iterdir()) == adapter_files
    with pytest.raises(ExportError, match="2 weight"):
        export_model(str(tiny_model_dir), adapters, tmp_path / "w", weights=[0.5, 0.5])


def test_auto_dtype_is_the_dtype_the_base_was_saved_in(tiny_model_dir, tiny_adapters, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = tmp_path / "base-bf16"
    AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).save_pretrained(base)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(base)
    out = export_model(str(base), parse_adapters([str(tiny_adapters["a"])]), tmp_path / "out").output
    with safe_open(out / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}  # noqa: SIM118
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"


def _export_cli(*args: str) -> tuple[int, str]:
    handlers = logging.getLogger().handlers[:]
    result = CliRunner().invoke(app, ["export", *args])
    logging.getLogger().handlers[:] = handlers  # the command logged to the runner's stream, closed now
    return result.exit_code, result.output


def test_relative_outputs_work_and_the_working_folder_is_refused(
    tiny_model_dir, tiny_adapters, tmp_path, monkeypatch
):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    command = ["--model", str(tiny_model_dir), "--adapter", str(tiny_adapters["a"])]
    for output in (".", "./", "..", str(work)):
        started = time.monotonic()
        code, text = _export_cli(*command, "--output", output, "--force")
        assert code not in (0, 70), text  # 70: a prefkit bug (it was one: Path(".").with_name)
        assert "the folder you are working in" in " ".join(text.split()), text
        assert time.monotonic() - started < 5  # refused before the model is loaded
    assert sorted(p.name for p in work.iterdir()) == ["notes.txt"]

    code, text = _export_cli(*command, "--output", "merged", "--dtype", "fp32")
    assert code == 0, text
    assert (work / "merged" / EXPORT_RECORD).is_file()
    code, text = _export_cli(*command, "--output", "./sub/../merged", "--dtype", "fp32", "--force")
    assert code == 0, text
    assert sorted(p.name for p in work.iterdir()) == ["merged", "notes.txt"]  # no temporary folders


def test_force_replaces_only_an_earlier_export(tiny_model_dir, tiny_adapters, tmp_path):
    adapters = parse_adapters([str(tiny_adapters["a"])])
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(ExportError, match=f"has no {EXPORT_RECORD}.*even with --force"):
        export_model(str(tiny_model_dir), adapters, mine, force=True)
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]

    empty = tmp_path / "empty"
    empty.mkdir()
    export_model(str(tiny_model_dir), adapters, empty)  # an empty folder needs no --force
    assert (empty / EXPORT_RECORD).is_file()
    export_model(str(tiny_model_dir), adapters, empty, force=True)  # an earlier export: replaced

    # a link to an earlier export: the folder it points to is replaced, the link stays
    link = tmp_path / "current"
    link.symlink_to(empty, target_is_directory=True)
    (empty / "stale.txt").write_text("from the earlier export")
    out = export_model(str(tiny_model_dir), adapters, link, force=True).output
    assert out == empty.resolve() and link.is_symlink() and (link / EXPORT_RECORD).is_file()
    assert not (empty / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "empty", "mine"]  # no .old link left


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.slow
def test_a_killed_export_is_cleaned_up_by_the_next_one(tiny_model_dir, tiny_adapters, tmp_path):
    out = tmp_path / "merged"
    args = [
        sys.executable, "-m", "prefkit", "export", "--model", str(tiny_model_dir),
        "--adapter", str(tiny_adapters["a"]), "--output", str(out), "--dtype", "fp32",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for _ in range(5):  # the temporary folder lives for a fraction of a second: retry if it was missed
        child = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        tmp = tmp_path / f".merged.tmp-{child.pid}"
        while child.poll() is None and not (tmp.is_dir() and any(tmp.iterdir())):
            time.sleep(0.0005)
        child.send_signal(signal.SIGKILL)  # mid-write, as when a machine dies
        child.wait()
        if tmp.is_dir() and not out.exists():
            break
        shutil.rmtree(out, ignore_errors=True)
    else:
        pytest.skip("could not kill the export while it was writing")
    # a folder that only looks like a leftover (no marker inside) and a running process's are kept
    lookalike = tmp_path / f".merged.tmp-{_dead_pid()}"
    lookalike.mkdir()
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    alive = tmp_path / f".merged.tmp-{running.pid}"
    shutil.copytree(tmp, alive)  # as a running export's folder is

    adapters = parse_adapters([str(tiny_adapters["a"])])
    try:
        export_model(str(tiny_model_dir), adapters, out, dtype="fp32")
    finally:
        running.kill()
        running.wait()
    assert not tmp.exists()  # the killed export's half-written folder
    assert sorted(tmp_path.iterdir()) == sorted([out, lookalike, alive])

    # killed between moving the earlier export aside and renaming the new one in: it is put back
    aside = tmp_path / f".merged.old-{_dead_pid()}"
    out.rename(aside)
    with pytest.raises(ExportError, match="pass --force"):
        export_model(str(tiny_model_dir), adapters, out, dtype="fp32")
    assert (out / EXPORT_RECORD).is_file() and not aside.exists()
    # killed while deleting the earlier export after the swap: the rest is deleted
    stale = tmp_path / f".merged.old-{_dead_pid()}"
    stale.mkdir()
    (stale / "model.safetensors").write_text("half deleted")
    export_model(str(tiny_model_dir), adapters, out, dtype="fp32", force=True)
    assert not stale.exists()
