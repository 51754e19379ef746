"""Trainer settings on the tiny model: the warm-up schedule, bf16 where it cannot run, gradient
checkpointing with LoRA, and where a full fine-tuning run's frozen reference lives."""

from __future__ import annotations

import logging

import pytest
import torch
from toydata import toy_pairs

from prefkit.config import load_config
from prefkit.errors import PrefkitError
from prefkit.train.recipe import train
from prefkit.train.settings import training_arguments


def config(tmp_path, model, *overrides: str):
    return load_config(
        None,
        [
            f"model_name_or_path={model}",
            f"train_file={toy_pairs(tmp_path / 'pairs.jsonl', 8)}",
            f"output_dir={tmp_path / 'run'}",
            "learning_rate=1e-3",
            "per_device_train_batch_size=2",
            "max_steps=4",
            "logging_steps=1",
            "save_steps=100",
            "cutoff_len=64",
            "plot_loss=false",
            *overrides,
        ],
    )


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        # Linear warm-up over all 4 steps: the rate logged at step k is the one it used, (k-1)/4 of the peak
        ("warmup_ratio=1.0", [0.0, 0.25, 0.5, 0.75]),
        ("warmup_ratio=0.5", [0.0, 0.5, 1.0, 0.5]),  # 2 steps up, then linear decay to 0 at step 4
        ("warmup_steps=1", [0.0, 1.0, 2 / 3, 1 / 3]),  # transformers' own key: a count
    ],
)
def test_warmup_is_a_share_of_the_steps(tmp_path, tiny_model_dir, setting, expected):
    result = train(config(tmp_path, tiny_model_dir, "lr_scheduler_type=linear", setting))
    rates = [r["learning_rate"] for r in result.metrics if "loss" in r]
    assert rates == pytest.approx([1e-3 * e for e in expected])


def test_bf16_where_the_cpu_has_none_is_a_clear_error(tmp_path, tiny_model_dir, monkeypatch):
    import prefkit.env

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.setattr(prefkit.env, "cpu_bf16_native", lambda: False)
    with pytest.raises(
        PrefkitError, match=r"bf16: true, but this CPU has no bfloat16 support .* set bf16: false"
    ):
        training_arguments(config(tmp_path, tiny_model_dir, "bf16=true"))


def test_bf16_where_the_cpu_computes_it_slower_is_a_warning(tmp_path, tiny_model_dir, monkeypatch, caplog):
    import prefkit.env

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.setattr(prefkit.env, "cpu_bf16_native", lambda: True)
    monkeypatch.setattr(prefkit.env, "cpu_bf16_fast", lambda cache=None: False)
    with caplog.at_level(logging.WARNING, logger="prefkit"):
        assert training_arguments(config(tmp_path, tiny_model_dir, "bf16=true")).bf16
    assert "bf16: false trains faster here" in caplog.text
    caplog.clear()
    monkeypatch.setattr(prefkit.env, "cpu_bf16_fast", lambda cache=None: True)
    with caplog.at_level(logging.WARNING, logger="prefkit"):
        training_arguments(config(tmp_path, tiny_model_dir, "bf16=true"))
    assert "faster here" not in caplog.text


@pytest.mark.parametrize("reentrant", [True, False])
def test_lora_with_gradient_checkpointing_trains_every_adapter(tmp_path, tiny_model_dir, reentrant, recwarn):
    """With reentrant checkpointing a checkpointed layer only gets gradients if its input requires them;
    the frozen embedding's output does not, unless input gradients are enabled. The seeds' key names
    (deprecated aliases since transformers 5.23) reach transformers under the current ones."""
    cfg_file = tmp_path / "gc.yaml"
    cfg_file.write_text(
        f"gradient_checkpointing: true\ngradient_checkpointing_kwargs: {{use_reentrant: {reentrant}}}\n"
    )
    result = train(
        load_config(
            cfg_file,
            [
                f"model_name_or_path={tiny_model_dir}",
                f"train_file={toy_pairs(tmp_path / 'pairs.jsonl', 8)}",
                f"output_dir={tmp_path / 'run'}",
                "learning_rate=1e-3",
                "per_device_train_batch_size=2",
                "max_steps=2",
                "save_steps=100",
                "plot_loss=false",
            ],
        )
    )
    from safetensors.torch import load_file

    weights = load_file(result.output_dir / "adapter_model.safetensors")
    lora_b = {n: w for n, w in weights.items() if "lora_B" in n}
    assert lora_b and all(w.abs().sum() > 0 for w in lora_b.values())  # B starts at 0: every one moved
    # Neither TrainingArguments' warning for the old key nor the one peft sets off reading the model's
    # deprecated is_gradient_checkpointing reaches the user.
    assert not [
        w for w in recwarn if w.category is FutureWarning and "gradient_checkpointing" in str(w.message)
    ]


@pytest.mark.parametrize("alias", ["gradient_checkpointing", "activation_checkpointing"])
def test_checkpointing_under_either_name_reaches_the_trainer_as_activation_checkpointing(
    tmp_path, tiny_model_dir, alias
):
    args = training_arguments(config(tmp_path, tiny_model_dir, f"{alias}=true"))
    assert args.activation_checkpointing is True


def test_a_full_finetuning_reference_sits_with_the_policy(tmp_path, tiny_model_dir):
    """The frozen copy is loaded beside the policy; the trainer places the policy (on the GPU, in its dtype)
    and the copy must follow, or the reference pass gets tensors on another device."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prefkit.data.collate import PreferenceCollator
    from prefkit.model.training import TrainingModel
    from prefkit.train.losses import LossParams
    from prefkit.train.trainer import PrefTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64)
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    cfg = config(tmp_path, tiny_model_dir, "finetuning_type=full")
    trainer = PrefTrainer(
        stage="dpo",
        loaded=TrainingModel(policy, tokenizer, reference.requires_grad_(False), None),
        loss_params=LossParams(beta=0.1),
        args=training_arguments(cfg),
        data_collator=PreferenceCollator(tokenizer.pad_token_id),
    )
    placed = {(p.device, p.dtype) for p in trainer.loaded.reference.parameters()}
    assert placed == {(next(trainer.model.parameters()).device, torch.float64)}


@pytest.mark.parametrize("stage", ["dpo", "sft"])
def test_group_by_length_groups_pairs_by_their_padded_length(tmp_path, tiny_model_dir, monkeypatch, stage):
    """transformers' length-grouped sampler reads a pair's length from the "length" column (it would look for
    ``input_ids``, which a pair has not); SFT examples have ``input_ids``."""
    import json

    import transformers.trainer
    from toydata import toy_sft

    lengths: list[list[int]] = []

    class Recording(transformers.trainer.LengthGroupedSampler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            lengths.append(list(self.lengths))

    monkeypatch.setattr(transformers.trainer, "LengthGroupedSampler", Recording)
    data = tmp_path / "varied.jsonl"
    rows = [
        {"prompt": "tell me " * (1 + i % 5), "chosen": "yes " * (1 + i % 3), "rejected": "no " * (1 + i % 4)}
        for i in range(12)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    train_file = data if stage == "dpo" else toy_sft(tmp_path / "sft.jsonl", 12)
    cfg = config(
        tmp_path, tiny_model_dir, f"stage={stage}", f"train_file={train_file}", "group_by_length=true"
    )
    result = train(cfg)
    assert [r["loss"] for r in result.metrics if "loss" in r] and len(lengths) == 1
    from transformers import AutoTokenizer

    from prefkit.data.load import prepare_data

    dataset = prepare_data(cfg, AutoTokenizer.from_pretrained(tiny_model_dir)).train
    if stage == "dpo":  # the longest row a pair makes in the padded layout: prompt and its longer reply
        expected = [len(f["prompt_ids"]) + max(len(f["chosen_ids"]), len(f["rejected_ids"])) for f in dataset]
    else:
        expected = [len(f["input_ids"]) for f in dataset]
    assert lengths[0] == expected and len(set(expected)) > 1
