"""`prefkit export`: the merged folder loads with plain transformers (no prefkit, no peft importable),
replies greedily as the unmerged model does, and a weighted combination is exactly the weighted sum of
the adapters' weight changes."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from typer.testing import CliRunner

from prefkit.cli import app
from prefkit.data.examples import Message
from prefkit.infer.export import ExportError, export_model
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
