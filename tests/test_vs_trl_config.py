"""benchmarks/vs_trl.py's pure parts: what a YAML (--config) becomes on each side of the race, the loss keys
TRL cannot take, and the rows TRL gets for SFT. No model is loaded."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from scriptkit import load_script

from prefkit.data.examples import Location, Message, PreferenceExample, SFTExample

REPO = Path(__file__).parent.parent
FIXTURES = REPO / "tests" / "fixtures"


vs_trl = load_script("benchmarks/vs_trl.py")


def test_the_plain_race_sets_what_it_always_set():
    args = vs_trl.race_arguments(["--precision", "bf16"])
    assert (args.methods, args.batch, args.grad_acc, args.cutoff, args.steps) == (
        "sigmoid,simpo,orpo",
        4,
        1,
        160,
        12,
    )
    assert args.trl_checkpointing == "default" and args.explicit == ["precision"]
    expected = {
        "model_name_or_path=/m",
        "train_file=builtin:tutor_train",
        "output_dir=/o",
        "stage=dpo",
        "lora_rank=8",
        "lora_alpha=16",
        "lora_target=all",
        "cutoff_len=160",
        "per_device_train_batch_size=4",
        "gradient_accumulation_steps=1",
        "learning_rate=5e-05",
        "lr_scheduler_type=constant",
        "max_steps=12",
        "logging_steps=1",
        "save_steps=100000",
        "plot_loss=false",
        "seed=42",
        "bf16=true",
    }
    for method, loss in (
        ("sigmoid", {"pref_loss=sigmoid", "pref_beta=0.1"}),
        ("simpo", {"pref_loss=simpo", "pref_beta=2.0", "simpo_gamma=0.5"}),
        ("orpo", {"pref_loss=orpo", "pref_beta=0.1"}),
    ):
        args.method = method
        assert set(vs_trl.prefkit_overrides(args, "/m", Path("/o"), Path("/c"))) == expected | loss
    args.method = "sft"
    sft = set(vs_trl.prefkit_overrides(args, "/m", Path("/o"), Path("/c")))
    assert "stage=sft" in sft and not any(o.startswith(("pref_", "stage=dpo")) for o in sft)


def llamafactory_yaml(tmp_path: Path) -> Path:
    text = (FIXTURES / "configs" / "llamafactory_qwen3_lora_dpo.yaml").read_text()
    text = text.replace("Qwen/Qwen3-4B-Instruct-2507", "smollm2-135m-instruct")
    text = text.replace("lora_target: all", "lora_target: q_proj,v_proj")
    extra = (
        f"dataset_dir: {FIXTURES / 'data' / 'llamafactory'}\n"
        "cutoff_len: 512\nmax_steps: 5\nquantization_bit: 4\nbatch_layout: padded\n"
        "gradient_checkpointing: true\n"
    )
    path = tmp_path / "dpo.yaml"
    path.write_text(text.replace("cutoff_len: 2048\n", extra))
    return path


def test_a_config_sets_both_sides_and_accounts_for_every_key(tmp_path):
    path = llamafactory_yaml(tmp_path)
    args = vs_trl.race_arguments(["--config", str(path), "--grad-acc", "2", "--precision", "bf16"])
    assert (args.methods, args.batch, args.grad_acc, args.cutoff, args.steps) == ("sigmoid", 1, 2, 512, 5)
    assert (args.lr, args.lr_scheduler_type, args.warmup_ratio) == (5e-6, "cosine", 0.1)
    assert args.lora_target == ["q_proj", "v_proj"] and args.lora_alpha == 16 and args.data is None
    assert args.template == "qwen3_nothink" and args.trl_checkpointing == "match"
    # Passed through to TRL too, less what the race sets (dataloader workers: counted in-process).
    assert args.training_arguments == {
        "activation_checkpointing": True,
        "dataloader_num_workers": 4,
        "ddp_timeout": 180000000,
    }
    accounting = args.accounting
    assert set(accounting["not_raced"]) == {"quantization_bit"}
    assert set(accounting["prefkit_only"]) == {"batch_layout"}
    assert accounting["overridden"]["gradient_accumulation_steps"] == "8 -> --grad-acc 2"
    assert {"dataloader_num_workers", "num_train_epochs", "save_steps", "output_dir"} <= set(
        accounting["set_by_race"]
    )
    assert {"lora_target", "dataset", "dataset_dir", "max_samples", "warmup_ratio"} <= set(
        accounting["raced"]
    )
    assert any("preprocessing_num_workers" in w for w in accounting["loader_warnings"])

    args.method = "sigmoid"
    common = vs_trl.trl_arguments(args, tmp_path / "trl", checkpointing=True)
    assert common["activation_checkpointing"] is True and common["dataloader_num_workers"] == 0
    assert common["warmup_steps"] == 0.1 and common["lr_scheduler_type"] == "cosine"
    config = vs_trl.prefkit_config(args, "/m", tmp_path / "out", tmp_path / "cache", own=True)
    assert (
        config.quantization_bit is None and config.eval_strategy == "no" and config.dataset == ["dpo_en_demo"]
    )
    assert (config.per_device_train_batch_size, config.gradient_accumulation_steps, config.max_steps) == (
        1,
        2,
        5,
    )
    assert config.batch_layout == "padded" and config.training_arguments["dataloader_num_workers"] == 0


def test_a_data_option_replaces_the_yaml_datasets(tmp_path):
    path = llamafactory_yaml(tmp_path)
    args = vs_trl.race_arguments(
        ["--config", str(path), "--data", "builtin:tutor_train", "--precision", "bf16"]
    )
    args.method = "sigmoid"
    config = vs_trl.prefkit_config(args, "/m", tmp_path / "out", tmp_path / "cache", own=False)
    assert config.train_file == "builtin:tutor_train" and config.dataset is None
    assert "dataset" in args.accounting["overridden"]


def test_loss_keys_trl_cannot_take_are_left_out_on_both_sides():
    settings, dropped = vs_trl.loss_settings("orpo", {"pref_ftx": 0.3, "pref_beta": 0.2})
    assert settings["pref_ftx"] == 0.0 and settings["pref_beta"] == 0.2 and set(dropped) == {"pref_ftx"}
    settings, dropped = vs_trl.loss_settings("simpo", {"pref_ftx": 0.3, "dpo_label_smoothing": 0.1})
    assert (settings["pref_ftx"], settings["dpo_label_smoothing"], settings["simpo_gamma"]) == (0.3, 0.1, 0.5)
    assert not dropped
    _, dropped = vs_trl.loss_settings("sigmoid", {"dpo_label_smoothing": 0.1})
    assert set(dropped) == {"dpo_label_smoothing"}
    assert vs_trl.loss_settings("sft", {"pref_beta": 0.5}) == (vs_trl.loss_settings("sft", {})[0], {})


def test_trl_gets_sft_rows_as_prompt_and_completion_or_prefkits_tokens():
    where = [Location("d.jsonl", line=n) for n in range(4)]
    pair = PreferenceExample((Message("user", "q"),), "good", "bad", where[0])
    one_turn = SFTExample((Message("system", "s"), Message("user", "u"), Message("assistant", "a")), where[1])
    prepared = SimpleNamespace(train_examples=[pair, one_turn])
    rows, shape = vs_trl.trl_rows(prepared, "sft")
    assert shape == "prompt_completion"
    assert rows[0] == {
        "prompt": [{"role": "user", "content": "q"}],
        "completion": [{"role": "assistant", "content": "good"}],
    }
    assert [m["role"] for m in rows[1]["prompt"]] == ["system", "user"]

    two_turns = SFTExample(
        (Message("user", "u"), Message("assistant", "a"), Message("user", "v"), Message("assistant", "b")),
        where[2],
    )
    features = {w: {"input_ids": [n, n + 1], "labels": [-100, n + 1]} for n, w in enumerate(where)}
    prepared = SimpleNamespace(
        train_examples=[one_turn, two_turns], report=SimpleNamespace(features=features)
    )
    rows, shape = vs_trl.trl_rows(prepared, "sft")
    assert shape == "tokenized" and rows == [
        {"input_ids": [1, 2], "labels": [-100, 2]},
        {"input_ids": [2, 3], "labels": [-100, 3]},
    ]

    rows, shape = vs_trl.trl_rows(SimpleNamespace(train_examples=[pair]), "sigmoid")
    assert shape == "preference" and rows[0]["chosen"] == [{"role": "assistant", "content": "good"}]
