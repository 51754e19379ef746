"""The engine on every model family the seeds use -- GPT-2 (DialoGPT-small), Qwen2 (TinySwallow-1.5B),
Gemma 2 (gemma-2-2b-jpn-it) and Llama (SmolLM2) -- each a tiny random model with its family's real chat
template and special tokens (tests/tiny.py): every loss and SFT trains with finite losses and gradients
and saves an adapter peft loads; a trained model's reply stops at the end-of-turn token; a conversation
the template refuses is a data problem with its file:line."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from tiny import FAMILIES, build_family
from toydata import toy_pairs, toy_sft

from prefkit.config import load_config
from prefkit.data.examples import Message
from prefkit.data.load import check_data
from prefkit.data.tokenize import ChatEncoder
from prefkit.errors import PrefkitError
from prefkit.infer.generate import generate
from prefkit.infer.sampling import SamplingSettings
from prefkit.model.loader import load_tokenizer
from prefkit.train.losses import LOSSES
from prefkit.train.recipe import train

METHODS = [*sorted(LOSSES), "sft"]


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {name: build_family(name, root / name) for name in FAMILIES}


def family_config(tmp_path: Path, model: Path, family: str, *overrides: str, name: str = "run"):
    """A short run's config on a tiny model of ``family``, into ``tmp_path / name``."""
    template = FAMILIES[family].template
    return load_config(
        None,
        [
            f"model_name_or_path={model}",
            f"output_dir={tmp_path / name}",
            "per_device_train_batch_size=2",
            "logging_steps=1",
            "save_steps=1000",
            "cutoff_len=64",
            "plot_loss=false",
            "lr_scheduler_type=constant",
            *([f"template={template}"] if template else []),
            *overrides,
        ],
    )


def run(tmp_path: Path, model: Path, family: str, *overrides: str):
    return train(family_config(tmp_path, model, family, *overrides))


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_method_trains_on_every_family(tmp_path, family_dirs, family, method):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = family_dirs[family]
    if method == "sft":
        stage = ["stage=sft", f"train_file={toy_sft(tmp_path / 'sft.jsonl', n=4)}"]
    else:
        stage = ["stage=dpo", f"pref_loss={method}", f"train_file={toy_pairs(tmp_path / 'pairs.jsonl', n=4)}"]
    result = run(tmp_path, model, family, *stage, "max_steps=2", "learning_rate=1e-3")

    records = [r for r in result.metrics if "loss" in r and "train_runtime" not in r]
    assert len(records) == 2
    for r in records:
        assert math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) and r["grad_norm"] > 0, r
        assert r["nonfinite_steps"] == 0
    if method != "sft" and LOSSES[method].needs_reference:
        # LoRA starts as the identity, so at step 1 the policy is the reference exactly -- with GPT-2's
        # dropout left on, the two passes would differ by noise.
        assert records[0]["rewards/chosen"] == 0.0 and records[0]["rewards/rejected"] == 0.0

    out = result.output_dir
    adapter = json.loads((out / "adapter_config.json").read_text())
    targets = {name.rsplit(".", 1)[-1] for name in adapter["target_modules"]}
    assert FAMILIES[family].lora_target in targets and "lm_head" not in targets  # `lora_target: all`
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model), out)
    saved = {n: p for n, p in loaded.named_parameters() if "lora_B" in n}
    assert saved and any(p.abs().sum() > 0 for p in saved.values())  # trained weights, not the init


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_trained_reply_stops_at_the_end_of_turn(tmp_path, family_dirs, family):
    """SFT until the model has learnt four replies, then generate: each reply is the learnt text, cut at
    the family's end of turn (a stop id, or for GPT-2 with ChatML, where <|im_end|> is several tokens, a
    stop string) -- not run on to max_new_tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    names = ["Ann", "Bob", "Cy", "Dee"]
    data = tmp_path / "hello.jsonl"
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Say hello to {n}."},
                {"role": "assistant", "content": f"Hello, {n}!"},
            ]
        }
        for n in names
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run(
        tmp_path,
        family_dirs[family],
        family,
        "stage=sft",
        f"train_file={data}",
        "finetuning_type=full",
        "per_device_train_batch_size=4",
        "max_steps=80",
        "learning_rate=1e-2",
        "logging_steps=20",
        "cutoff_len=128",  # GPT-2 spells ChatML's markers out in several tokens each
    )
    model = AutoModelForCausalLM.from_pretrained(result.output_dir)
    encoder = ChatEncoder(AutoTokenizer.from_pretrained(result.output_dir), FAMILIES[family].template, 64)
    prompts = [[Message("user", f"Say hello to {n}.")] for n in names]
    replies = generate(model, encoder, prompts, settings=SamplingSettings(max_new_tokens=40))
    assert all(re.fullmatch(r"Hello, \w+!", reply) for reply in replies), replies
    assert encoder.end_of_turn == FAMILIES[family].end_of_turn


def test_a_system_message_gemma_refuses_is_a_data_problem(tmp_path, family_dirs):
    """Gemma's template raises "System role not supported": data check names the line, training refuses it
    (or skips and counts it with on_bad_example: skip), and a named template that folds the system text
    into the first user turn accepts it."""
    from prefkit.data.sources import DataError

    data = toy_pairs(tmp_path / "pairs.jsonl", n=4)
    rows = []
    for i, line in enumerate(data.read_text().splitlines()):  # as chat messages; line 2 with a system turn
        row = json.loads(line)
        system = [{"role": "system", "content": "Be kind."}] if i == 1 else []
        rows.append(
            {
                "prompt": [*system, {"role": "user", "content": row["prompt"]}],
                "chosen": [{"role": "assistant", "content": row["chosen"]}],
                "rejected": [{"role": "assistant", "content": row["rejected"]}],
            }
        )
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    gemma = family_dirs["gemma"]
    report = check_data([data], tokenizer=load_tokenizer(str(gemma)), cutoff_len=64)
    assert not report.ok
    assert [str(p) for p in report.errors] == [
        f"{data}:2: the model's chat template refuses this conversation: System role not supported -- remove "
        "the system message, or set `template:` to one that puts it in the first user turn (prefkit's "
        "`gemma` and `mistral` do)"
    ]
    with pytest.raises(DataError, match=rf"{re.escape(str(data))}:2: the model's chat template refuses"):
        run(tmp_path, gemma, "gemma", "stage=dpo", f"train_file={data}", "max_steps=1")
    skipped = run(tmp_path, gemma, "gemma", f"train_file={data}", "max_steps=1", "on_bad_example=skip")
    record = json.loads((skipped.output_dir / "training_config.json").read_text())
    assert record["data"]["train_examples"] == 3 and len(record["data"]["skipped"]) == 1
    assert check_data([data], tokenizer=load_tokenizer(str(gemma)), cutoff_len=64, template="gemma").ok


def test_dropout_is_off_in_preference_stages_and_in_every_reference_pass(family_dirs):
    """GPT-2 ships with dropout 0.1. In a preference stage prefkit turns it off (disable_dropout, default
    true); with disable_dropout: false the policy keeps it, but the reference pass never uses it."""
    from prefkit.model.training import load_for_training

    model = str(family_dirs["gpt2"])
    batch = {
        "input_ids": torch.arange(3, 23).view(2, 10),
        "attention_mask": torch.ones(2, 10, dtype=torch.long),
    }

    def loaded(*overrides: str):
        cfg = load_config(
            None, [f"model_name_or_path={model}", "template=chatml", "lora_target=c_attn", *overrides]
        )
        result = load_for_training(cfg, model, needs_reference=True)
        result.model.train()
        return result

    def two_passes(module) -> bool:
        with torch.no_grad():
            return torch.equal(module(**batch).logits, module(**batch).logits)

    torch.manual_seed(0)
    assert two_passes(loaded("stage=dpo").model)
    assert not two_passes(loaded("stage=sft").model)  # SFT keeps the model's dropout
    kept = loaded("stage=dpo", "disable_dropout=false")
    assert not two_passes(kept.model)
    with kept.reference_mode() as reference:
        assert two_passes(reference)
    assert kept.model.training  # back in training mode afterwards


def test_a_batch_layout_the_model_refuses_leaves_the_previous_run_as_it_was(tmp_path, family_dirs):
    """Gemma 2's sliding window (64 tokens in the tiny model) is shorter than a packed row (2 x cutoff_len):
    `batch_layout: packed` is refused -- before `overwrite_output_dir` has removed the run already there."""
    pairs = f"train_file={toy_pairs(tmp_path / 'pairs.jsonl', n=4)}"
    first = run(tmp_path, family_dirs["gemma"], "gemma", "stage=dpo", pairs, "max_steps=1")
    kept = {p: p.stat().st_mtime_ns for p in first.output_dir.rglob("*")}
    assert (first.output_dir / "adapter_config.json") in kept
    with pytest.raises(PrefkitError, match="batch_layout: packed needs the model's attention"):
        run(
            tmp_path,
            family_dirs["gemma"],
            "gemma",
            "stage=dpo",
            pairs,
            "max_steps=1",
            "batch_layout=packed",
            "overwrite_output_dir=true",
        )
    assert {p: p.stat().st_mtime_ns for p in first.output_dir.rglob("*")} == kept
