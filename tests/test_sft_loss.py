"""SFT's loss from log-probs at labelled positions (prefkit.train.sft) equals transformers' own
``model(labels=...)`` loss -- in value and in the gradients of every trainable parameter, with and without
``num_items_in_batch``, on every tiny family -- and a PrefTrainer SFT run with gradient accumulation logs,
evaluates and trains exactly as transformers' Trainer does on the same batches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny import FAMILIES, build_family

from prefkit.config import load_config
from prefkit.data.tokenize import IGNORE_INDEX
from prefkit.model.output_layer import plain_output_layer
from prefkit.train.recipe import train
from prefkit.train.sft import causal_lm_loss

# float32: the two paths sum the same per-token terms in a different order (measured: at most 3e-7 of the
# loss, and 1e-6 of a gradient tensor's largest element).
TOLERANCE = {"rtol": 1e-6, "atol": 1e-6}
GRAD_TOLERANCE = 1e-5
LOGIT_SCALE = 50.0


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {name: build_family(name, root / name) for name in FAMILIES}


def _model(path: Path, training: str) -> Any:
    """The family's model in float32, trained as ``training`` says: ``lora`` (every linear layer but the
    output layer: the fused path), ``lora_head`` (the output layer too: the logits path) or ``full``."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    with torch.no_grad():
        # Logits of a trained model's size (tens), not a random one's (tenths): Gemma 2's soft-capping at
        # 30 then changes them, and the softmax is peaked.
        model.get_output_embeddings().weight.mul_(LOGIT_SCALE)
    if training != "full":
        targets: Any = "all-linear" if training == "lora" else [FAMILIES[path.name].lora_target, "lm_head"]
        # Random B as well as A (peft starts B at zero): every adapter weight gets a gradient.
        config = LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False)
        model = get_peft_model(model, config)
    return model.eval()  # GPT-2's dropout off: both passes must see the same network


def _batch(vocab: int) -> dict[str, torch.Tensor]:
    """Right-padded rows with prompts of different lengths; row 2 is labelled from position 0 (which no
    position predicts), row 3 has no labelled token at all."""
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(6, vocab, (4, 13), generator=g)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 9:] = 0
    labels = input_ids.clone()
    labels[0, :5] = IGNORE_INDEX
    labels[1, :3] = IGNORE_INDEX
    labels[1, 9:] = IGNORE_INDEX
    labels[3, :] = IGNORE_INDEX
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _assert_grads_close(grads: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert grads.keys() == expected.keys() and len(grads) > 0
    for name, grad in grads.items():
        scale = expected[name].abs().max().item()
        torch.testing.assert_close(
            grad,
            expected[name],
            rtol=GRAD_TOLERANCE,
            atol=GRAD_TOLERANCE * scale,
            msg=lambda m, n=name: f"{n}: {m}",
        )


def _loss_and_grads(model: Any, loss_fn: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = loss_fn()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


@pytest.mark.parametrize("training", ["lora", "lora_head", "full"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("num_items", [None, 31])  # 31: more tokens than this micro-batch has (accumulation)
def test_sft_loss_equals_the_models_own_in_value_and_gradient(family_dirs, family, training, num_items):
    model = _model(family_dirs[family], training)
    # The case names the path: the output layer fused with the log-softmax, or the model's own logits.
    assert (plain_output_layer(model) is not None) == (training != "lora_head")
    batch = _batch(model.config.vocab_size)
    kwargs = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}

    expected, expected_grads = _loss_and_grads(model, lambda: model(**batch, **kwargs).loss)
    ours, grads = _loss_and_grads(
        model, lambda: causal_lm_loss(model, batch, kwargs.get("num_items_in_batch"))
    )

    torch.testing.assert_close(ours, expected, **TOLERANCE)
    assert ours.dtype == torch.float32
    _assert_grads_close(grads, expected_grads)
    # Every trainable parameter's gradient is compared, and they are not all zero (LoRA's B included).
    assert all(g.abs().sum() > 0 for n, g in grads.items() if "lora_" in n)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_batch_with_position_ids_gives_what_the_model_gives(family_dirs, family):
    """Position ids as a packed or padding-free layout hands them to the model -- left padding skipped,
    a second sequence in row 0 counting from 0 again -- reach the model on both paths."""
    model = _model(family_dirs[family], "lora")
    batch = _batch(model.config.vocab_size)
    batch["attention_mask"] = batch["attention_mask"].flip(-1)
    batch["labels"][1] = batch["labels"][1].roll(4)  # row 1's 4 padding positions now come first
    batch["position_ids"] = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    batch["position_ids"][0, 7:] = torch.arange(6)
    count = torch.tensor(40)
    expected, expected_grads = _loss_and_grads(model, lambda: model(**batch, num_items_in_batch=count).loss)
    ours, grads = _loss_and_grads(model, lambda: causal_lm_loss(model, batch, count))
    torch.testing.assert_close(ours, expected, **TOLERANCE)
    _assert_grads_close(grads, expected_grads)
    without, _ = _loss_and_grads(model, lambda: causal_lm_loss(model, {**batch, "position_ids": None}, count))
    assert not torch.allclose(without, ours)  # the position ids made a difference to the loss


def test_a_batch_with_no_labelled_token_gives_what_the_model_gives(family_dirs):
    """0 with a zero gradient under num_items_in_batch (a micro-batch of prompts only, in an accumulated
    step); NaN (0 / 0) as the mean, as cross_entropy's mean gives."""
    model = _model(family_dirs["llama"], "lora")
    batch = _batch(model.config.vocab_size)
    batch["labels"] = torch.full_like(batch["labels"], IGNORE_INDEX)
    count = torch.tensor(5)
    expected, _ = _loss_and_grads(model, lambda: model(**batch, num_items_in_batch=count).loss)
    ours, grads = _loss_and_grads(model, lambda: causal_lm_loss(model, batch, count))
    assert ours.item() == expected.item() == 0.0
    assert all(torch.all(g == 0) for g in grads.values())
    assert torch.isnan(causal_lm_loss(model, batch)) and torch.isnan(model(**batch).loss)


# -- the trainer ------------------------------------------------------------------------------------


def _sft_file(path: Path, n: int) -> Path:
    """Conversations of varied lengths: micro-batches with different numbers of labelled tokens, so the
    accumulated step's loss depends on num_items_in_batch being the whole step's count."""
    rows = [
        {
            "messages": [
                {"role": "user", "content": "Say hello to " + "you and " * (i % 4) + f"{i}."},
                {"role": "assistant", "content": "Hello" + ", dear" * (3 * (i % 3)) + f", {i}!"},
            ]
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


class _DropTokenCount:
    """The SFT collator without prefkit's tokens/s count, which transformers' Trainer would hand the model."""

    def __init__(self, collator: Any) -> None:
        self.collator = collator

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        from prefkit.data.collate import NUM_TOKENS

        return {k: v for k, v in self.collator(features).items() if k != NUM_TOKENS}


@pytest.mark.slow
def test_accumulated_sft_steps_log_and_train_as_transformers_trainer(tmp_path, tiny_model_dir, monkeypatch):
    """Two optimiser steps of two micro-batches each: PrefTrainer (the chunked loss) and transformers' own
    Trainer (model(labels=...)) on the same model, data and arguments log the same losses and gradient
    norms, end with the same weights and evaluate to the same loss. (Plain SGD, so the weights differ
    only as much as the gradients do.)"""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer

    from prefkit.data.collate import SFTCollator
    from prefkit.data.load import prepare_data
    from prefkit.model.training import TrainingModel
    from prefkit.train import trainer as trainer_module
    from prefkit.train.settings import training_arguments

    calls: list[bool] = []
    chunked = trainer_module.trainer_sft_loss

    def counted(trainer: Any, model: Any, inputs: Any, num_items: Any) -> torch.Tensor:
        calls.append(model.training)
        return chunked(trainer, model, inputs, num_items)

    monkeypatch.setattr(trainer_module, "trainer_sft_loss", counted)
    data, held_out = _sft_file(tmp_path / "sft.jsonl", 12), _sft_file(tmp_path / "eval.jsonl", 5)
    cfg = load_config(
        None,
        [
            f"model_name_or_path={tiny_model_dir}",
            "stage=sft",
            f"train_file={data}",
            f"eval_file={held_out}",
            f"output_dir={tmp_path / 'run'}",
            "learning_rate=0.5",
            "optim=sgd",  # Adam's first steps are about lr * sign(gradient): rounding could flip one
            "per_device_train_batch_size=2",
            "per_device_eval_batch_size=3",
            "gradient_accumulation_steps=2",
            "fuse_accumulation_tokens=0",  # accumulation as transformers runs it (fusing: test_fusion.py)
            "max_steps=2",
            "logging_steps=1",
            "save_strategy=no",
            "cutoff_len=64",
            "plot_loss=false",
            "report_to=none",
        ],
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prepared = prepare_data(cfg, tokenizer)
    collator = SFTCollator(tokenizer.pad_token_id)

    def model() -> Any:
        torch.manual_seed(3)
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        return get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))

    common = {"train_dataset": prepared.train, "eval_dataset": prepared.eval}
    ours = trainer_module.PrefTrainer(
        stage="sft",
        loaded=TrainingModel(model(), tokenizer, None, None),
        args=training_arguments(cfg),
        data_collator=collator,
        **common,
    )
    theirs = Trainer(
        model=model(),
        args=training_arguments(cfg),
        data_collator=_DropTokenCount(collator),
        processing_class=tokenizer,
        **common,
    )
    for trainer in (ours, theirs):
        trainer.train()
    assert calls == [True] * 4  # every micro-batch took the chunked path

    def logged(trainer: Any, key: str) -> list[float]:
        return [record[key] for record in trainer.state.log_history if "loss" in record]

    assert len(logged(ours, "loss")) == 2
    assert logged(ours, "loss") == pytest.approx(logged(theirs, "loss"), rel=1e-5)
    assert logged(ours, "grad_norm") == pytest.approx(logged(theirs, "grad_norm"), rel=1e-4)
    trained = dict(ours.model.named_parameters())
    assert all(p.abs().sum() > 0 for n, p in trained.items() if "lora_B" in n)  # B starts at zero: trained
    for name, parameter in theirs.model.named_parameters():
        if parameter.requires_grad:
            torch.testing.assert_close(trained[name], parameter, rtol=1e-5, atol=1e-6)

    evaluated = ours.evaluate()["eval_loss"]
    assert calls[4:] and not any(calls[4:])  # evaluation took it too
    assert evaluated == pytest.approx(theirs.evaluate()["eval_loss"], rel=1e-5)


DRIVER = "import sys\nfrom prefkit.config import load_config\nfrom prefkit.train.recipe import train\n" + (
    "train(load_config(None, sys.argv[1:]))\n"
)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="torchrun/gloo test written for Linux")
def test_two_process_sft_equals_one_process(tmp_path, tiny_model_dir):
    """Under DDP the Trainer counts num_items_in_batch over both processes' micro-batches and scales each
    process's loss back up by the number of processes (average_tokens_across_devices): two processes of
    two rows log the losses and train the weights of one process of four."""
    from safetensors.torch import load_file

    from prefkit.train.run.metrics import read_metrics

    data = _sft_file(tmp_path / "sft.jsonl", 16)

    def settings(out: Path, batch: int) -> list[str]:
        return [
            f"model_name_or_path={tiny_model_dir}",
            "stage=sft",
            f"train_file={data}",
            f"output_dir={out}",
            "learning_rate=0.5",
            "optim=sgd",
            "lr_scheduler_type=constant",
            f"per_device_train_batch_size={batch}",
            "gradient_accumulation_steps=2",
            "max_steps=3",
            "logging_steps=1",
            "save_strategy=no",
            "cutoff_len=64",
            "plot_loss=false",
        ]

    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    # The source under test (PYTHONPATH, as the tests run it) with the tests' helpers first.
    path = os.pathsep.join(p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    result = subprocess.run(
        [*command, str(driver), *settings(tmp_path / "ddp", 2)],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    single = train(load_config(None, settings(tmp_path / "single", 4)))

    ddp_loss = [r["loss"] for r in read_metrics(tmp_path / "ddp" / "metrics.jsonl") if "loss" in r]
    assert len(ddp_loss) == 3
    assert ddp_loss == pytest.approx([r["loss"] for r in single.metrics if "loss" in r], rel=1e-5)
    ddp_weights = load_file(tmp_path / "ddp" / "adapter_model.safetensors")
    one_weights = load_file(single.output_dir / "adapter_model.safetensors")
    assert ddp_weights.keys() == one_weights.keys()
    for name, weight in one_weights.items():
        torch.testing.assert_close(ddp_weights[name], weight, rtol=1e-4, atol=1e-6)
