"""Tests for prefkit.config: real LLaMA-Factory / user configs load, and every kind of mistake is reported
with its file line and a sentence a user can act on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from prefkit.config import IGNORED_KEYS, Config, ConfigError, load_config, parse_override

CONFIGS = Path(__file__).parent / "fixtures" / "configs"


def load(path: str | Path | None, *overrides: str) -> tuple[Config, list[str]]:
    warnings: list[str] = []
    config = load_config(path, overrides, warn=warnings.append)
    return config, warnings


def load_error(path: str | Path | None, *overrides: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides, warn=lambda message: None)
    lines = str(info.value).splitlines()
    assert lines == info.value.problems
    return lines


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def line_of(path: Path, key: str) -> int:
    """The 1-based line where `key:` starts, found by reading the text, independently of the YAML parser."""
    lines = path.read_text(encoding="utf-8").splitlines()
    [number] = [n for n, line in enumerate(lines, 1) if line.startswith(f"{key}:")]
    return number


def ignored_keys_in(warnings: list[str]) -> set[str]:
    return {key for key in IGNORED_KEYS for message in warnings if f"'{key}' is ignored" in message}


# ----------------------------------------------------------------------------- configs that must load
def test_llamafactory_llama3_lora_dpo() -> None:
    path = CONFIGS / "llamafactory_llama3_lora_dpo.yaml"
    config, warnings = load(path)
    assert config.model_name_or_path == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert config.stage == "dpo" and config.finetuning_type == "lora"
    assert config.lora_target == ["all"]
    assert config.lora_alpha == 16
    assert config.dataset == ["dpo_en_demo"]
    assert config.learning_rate == 5e-6
    assert config.warmup_ratio == 0.1
    assert config.bf16 is True and config.overwrite_output_dir is True
    assert config.training_arguments == {"ddp_timeout": 180000000}
    assert config.config_file == str(path)
    assert ignored_keys_in(warnings) == {"overwrite_cache", "preprocessing_num_workers"}
    assert len(warnings) == 2
    assert any("does not cache tokenised data" in w for w in warnings)
    sources = config.sources()
    assert sources["learning_rate"] == f"{path}:{line_of(path, 'learning_rate')}"
    assert sources["ddp_timeout"] == f"{path}:{line_of(path, 'ddp_timeout')}"
    assert sources["lora_alpha"] == "default (2 x lora_rank)"
    assert sources["seed"] == "default"


def test_llamafactory_qwen3_lora_dpo() -> None:
    config, warnings = load(CONFIGS / "llamafactory_qwen3_lora_dpo.yaml")
    assert config.template == "qwen3_nothink"
    assert config.report_to == "none"
    assert config.resume_from_checkpoint is False
    assert config.training_arguments == {
        "dataloader_num_workers": 4,
        "save_only_model": False,
        "ddp_timeout": 180000000,
    }
    assert ignored_keys_in(warnings) == {"preprocessing_num_workers"}
    assert len(warnings) == 1


def test_llamafactory_qwen2vl_lora_dpo() -> None:
    config, warnings = load(CONFIGS / "llamafactory_qwen2vl_lora_dpo.yaml")
    assert config.dataset == ["rlhf_v"] and config.template == "qwen2_vl"
    assert config.lora_rank == 8 and config.lora_alpha == 16
    assert config.val_size == 0.1
    assert config.per_device_eval_batch_size == 1
    assert config.eval_strategy == "steps" and config.eval_steps == 500
    assert ignored_keys_in(warnings) == {"overwrite_cache", "preprocessing_num_workers"}
    assert len(warnings) == 2


def test_seed_simpo() -> None:
    path = CONFIGS / "seed_simpo.yaml"
    config, warnings = load(path)
    assert config.pref_loss == "simpo" and config.pref_beta == 2.0 and config.simpo_gamma == 0.5
    assert config.lora_rank == 32 and config.lora_alpha == 32 and config.lora_dropout == 0.05
    assert config.quantization_bit == 4
    assert config.fp16 is True and config.bf16 is False
    assert config.num_train_epochs == 1.0 and config.save_total_limit == 3
    assert config.training_arguments == {
        "optim": "adamw_torch",
        "dataloader_num_workers": 4,
        "remove_unused_columns": False,
    }
    assert ignored_keys_in(warnings) == {
        "quantization_method",
        "use_unsloth",
        "use_unsloth_gc",
        "overwrite_cache",
        "save_safetensors",
    }
    assert len(warnings) == 5
    assert any("bitsandbytes" in w for w in warnings if "quantization_method" in w)
    # The user wrote the SimPO values, so they are the file's, not method defaults.
    assert config.sources()["pref_beta"] == f"{path}:20"


def test_model_path_can_be_replaced_from_the_command_line() -> None:
    config, _ = load(CONFIGS / "seed_simpo.yaml", "model_name_or_path=/models/llama-3.2-1b")
    assert config.model_name_or_path == "/models/llama-3.2-1b"
    assert config.sources()["model_name_or_path"] == "command line"


def test_notebook_sft_keys_load_with_rename_warnings() -> None:
    path = CONFIGS / "notebook_sft.yaml"
    config, warnings = load(path)
    assert config.stage == "sft"
    assert config.eval_strategy == "steps"
    assert config.lora_target == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert config.lr_scheduler_type == "cosine_with_restarts"
    assert config.val_size == 200
    assert config.training_arguments == {
        "use_cpu": False,
        "weight_decay": 0.06,
        "optim": "adamw_torch_fused",
        "gradient_checkpointing": True,
        "load_best_model_at_end": True,
        "metric_for_best_model": "combined_score",
        "eval_accumulation_steps": 4,
        "dataloader_pin_memory": True,
    }
    assert len(warnings) == 2
    renamed = {w.split("'")[1]: w for w in warnings}
    assert set(renamed) == {"evaluation_strategy", "no_cuda"}
    assert "renamed to 'eval_strategy'" in renamed["evaluation_strategy"]
    assert "renamed to 'use_cpu'" in renamed["no_cuda"]
    assert renamed["evaluation_strategy"].startswith(f"{path}:10:")
    assert config.sources()["eval_strategy"] == f"{path}:10"
    assert config.sources()["use_cpu"] == f"{path}:{line_of(path, 'no_cuda')}"


@pytest.mark.parametrize(("flag", "strategy"), [("true", "group_by_length"), ("false", "random")])
def test_transformers_4_group_by_length_reads_as_the_sampling_strategy(
    tmp_path: Path, flag, strategy
) -> None:
    path = write(tmp_path, f"stage: dpo\ngroup_by_length: {flag}\n")
    config, warnings = load(path)
    assert config.training_arguments == {"train_sampling_strategy": strategy}
    assert warnings == [
        f"{path}:2: 'group_by_length' was replaced by 'train_sampling_strategy' in transformers 5; read as "
        f"train_sampling_strategy: {strategy}"
    ]
    assert load(path, "group_by_length=1")[0].training_arguments == {
        "train_sampling_strategy": "group_by_length"
    }
    assert load_error(path, "group_by_length=sometimes") == [
        "command line: group_by_length: got sometimes -- expected true or false"
    ]


def test_defaults_without_a_file() -> None:
    config, warnings = load(None)
    assert warnings == []
    assert config.stage == "dpo" and config.pref_loss == "sigmoid"
    assert config.pref_beta == 0.1 and config.simpo_gamma is None
    assert config.resume_from_checkpoint == "auto"
    assert config.config_file is None
    assert config.sources()["pref_beta"] == "method default (sigmoid)"
    assert config.sources()["simpo_gamma"] == "default"


# ---------------------------------------------------------------------------------------- overrides
def test_parse_override() -> None:
    assert parse_override("learning_rate=1e-5") == ("learning_rate", 1e-05)
    assert parse_override(" bf16 = true") == ("bf16", True)
    assert parse_override("lora_target=[q_proj,v_proj]") == ("lora_target", ["q_proj", "v_proj"])
    assert parse_override("resume_from_checkpoint=null") == ("resume_from_checkpoint", None)
    assert parse_override("run_name=a=b") == ("run_name", "a=b")
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override("learning_rate")
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override("=3")


def test_overrides_switch_to_simpo_with_its_method_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "pref_loss: sigmoid\nlearning_rate: 5.0e-6\n")
    config, _ = load(path, "learning_rate=1e-5", "pref_loss=simpo")
    assert config.learning_rate == 1e-5
    assert config.pref_loss == "simpo"
    assert (config.pref_beta, config.simpo_gamma) == (2.0, 0.5)
    sources = config.sources()
    assert sources["learning_rate"] == "command line"
    assert sources["pref_loss"] == "command line"
    assert sources["pref_beta"] == "method default (simpo)"
    assert sources["simpo_gamma"] == "method default (simpo)"


def test_explicit_beta_is_kept_with_simpo() -> None:
    config, _ = load(None, "pref_loss=simpo", "pref_beta=2.5")
    assert (config.pref_beta, config.simpo_gamma) == (2.5, 0.5)
    assert config.sources()["pref_beta"] == "command line"


def test_scientific_notation_without_dot_in_yaml_is_a_number(tmp_path: Path) -> None:
    # PyYAML (YAML 1.1) would read `1e-5` as a string.
    config, _ = load(write(tmp_path, "learning_rate: 1e-5\nweight_decay: 1e-2\n"))
    assert config.learning_rate == 1e-5
    assert config.training_arguments["weight_decay"] == 0.01


def test_lora_target_comma_separated_and_list(tmp_path: Path) -> None:
    config, _ = load(None, "lora_target=q_proj, v_proj ,o_proj")
    assert config.lora_target == ["q_proj", "v_proj", "o_proj"]
    config, _ = load(write(tmp_path, "lora_target: [q_proj, v_proj]\ndataset: a, b\n"))
    assert config.lora_target == ["q_proj", "v_proj"]
    assert config.dataset == ["a", "b"]


def test_resume_from_checkpoint_forms() -> None:
    for text, expected in [
        ("null", False),
        ("false", False),
        ("'false'", False),
        ("auto", "auto"),
        ("true", "auto"),
        ("saves/run/checkpoint-500", "saves/run/checkpoint-500"),
    ]:
        config, _ = load(None, f"resume_from_checkpoint={text}")
        assert config.resume_from_checkpoint == expected, text


# ------------------------------------------------------------------------------------------- errors
def test_unknown_key_with_suggestion_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        model_name_or_path: x
        pref_loss: sigmoid
        pref_bta: 0.1
        zzzz_qqqq: 1
        """,
    )
    assert load_error(path) == [
        f"{path}:3: unknown key 'pref_bta' -- did you mean 'pref_beta'?",
        f"{path}:4: unknown key 'zzzz_qqqq'",
    ]


def test_unknown_key_on_command_line() -> None:
    assert load_error(None, "pref_bta=0.1") == [
        "command line: unknown key 'pref_bta' in 'pref_bta=0.1' -- did you mean 'pref_beta'?"
    ]


def test_wrong_type(tmp_path: Path) -> None:
    path = write(tmp_path, "seed: 1\nbf16: true\nlearning_rate: fast\n")
    assert load_error(path) == [f"{path}:3: learning_rate: got 'fast' -- expected a number > 0"]


def test_out_of_range(tmp_path: Path) -> None:
    path = write(tmp_path, "lora_rank: 0\nlora_dropout: 1.0\ndpo_label_smoothing: 0.7\n")
    assert load_error(path) == [
        f"{path}:1: lora_rank: got 0 -- expected an integer > 0",
        f"{path}:2: lora_dropout: got 1.0 -- expected a number >= 0 and < 1",
        f"{path}:3: dpo_label_smoothing: got 0.7 -- expected a number >= 0 and <= 0.5",
    ]


def test_literal_error_lists_choices_and_hints_dpo(tmp_path: Path) -> None:
    path = write(tmp_path, "stage: dpo\npref_loss: dpo\n")
    [line] = load_error(path)
    assert line.startswith(
        f"{path}:2: pref_loss: got 'dpo' -- expected one of sigmoid, hinge, ipo, kto_pair, orpo, simpo"
    )
    assert "'sigmoid'" in line.split("simpo", 1)[1]
    assert "did you mean 'ipo'" not in line


def test_bad_optim_with_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "optim: adamw_torchh\n")
    [line] = load_error(path)
    assert line.startswith(f"{path}:1: optim: got 'adamw_torchh' -- expected one of")
    assert line.endswith("did you mean 'adamw_torch'?")


def test_training_argument_wrong_type(tmp_path: Path) -> None:
    path = write(tmp_path, "weight_decay: lots\ndataloader_num_workers: 2.5\n")
    assert load_error(path) == [
        f"{path}:1: weight_decay: got 'lots' -- expected a number",
        f"{path}:2: dataloader_num_workers: got 2.5 -- expected an integer",
    ]


def test_bad_scheduler_with_suggestion() -> None:
    [line] = load_error(None, "lr_scheduler_type=cosin")
    assert line.startswith("command line: lr_scheduler_type: got 'cosin' -- expected one of linear, cosine,")
    assert line.endswith("did you mean 'cosine'?")


def test_val_size_non_integer_count_rejected() -> None:
    [line] = load_error(None, "val_size=2.5")
    assert line.startswith("command line: val_size: got 2.5 -- expected")
    config, _ = load(None, "val_size=3")
    assert config.val_size == 3


def test_bf16_and_fp16_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "bf16: true\nseed: 3\nfp16: true\n")
    assert load_error(path) == [f"{path}:3: bf16 and fp16 are both true -- choose one mixed precision"]
    # The command line can fix it.
    config, _ = load(path, "fp16=false")
    assert config.bf16 and not config.fp16


def test_cross_key_problem_reported_alongside_field_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "bf16: true\nfp16: true\nlearning_rate: -1\n")
    lines = load_error(path)
    assert len(lines) == 2
    assert lines[0] == f"{path}:2: bf16 and fp16 are both true -- choose one mixed precision"
    assert lines[1].startswith(f"{path}:3: learning_rate: got -1")


def test_all_problems_collected_in_file_order(tmp_path: Path) -> None:
    path = write(tmp_path, "lora_rank: -1\npref_bta: 1\noptim: nope_nope_nope\nstage: rm\n")
    lines = load_error(path, "max_steps=0")
    assert [line.split(":")[1] for line in lines[:4]] == ["1", "2", "3", "4"]
    assert lines[4] == "command line: max_steps: got 0 -- expected -1 or an integer > 0"


def test_duplicate_key_names_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "lora_rank: 8\nseed: 1\nlora_rank: 16\n")
    assert load_error(path) == [f"{path}:3: duplicate key 'lora_rank' (first given on line 1)"]


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    path = write(tmp_path, "seed: 1\nlora_target: [q_proj, v_proj\nbf16: true\n")
    [line] = load_error(path)
    assert line.startswith(f"{path}:3: invalid YAML: ")


def test_top_level_not_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- seed: 1\n- bf16: true\n")
    [line] = load_error(path)
    assert line.startswith(f"{path}:1: the top level is a list")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert load_error(path) == [f"{path}: config file not found"]


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    config, _ = load(write(tmp_path, "# nothing yet\n"))
    assert config.learning_rate == 5e-5


def test_old_and_new_name_together_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "evaluation_strategy: steps\neval_strategy: epoch\n")
    [line] = load_error(path)
    assert line.startswith(f"{path}:2: 'eval_strategy' and 'evaluation_strategy' ({path}:1)")
    # ...but the command line may override the file's old spelling.
    config, _ = load(write(tmp_path, "evaluation_strategy: steps\n", "old.yaml"), "eval_strategy=epoch")
    assert config.eval_strategy == "epoch"


def test_bare_no_in_yaml_means_the_string(tmp_path: Path) -> None:
    config, _ = load(write(tmp_path, "eval_strategy: no\nsave_strategy: no\n"))
    assert config.eval_strategy == "no"
    assert config.training_arguments["save_strategy"] == "no"


def test_quantization_needs_lora() -> None:
    [line] = load_error(None, "finetuning_type=full", "quantization_bit=4")
    assert "quantization_bit: 4 needs finetuning_type: lora" in line


# ------------------------------------------------------------------------------------------ warnings
def test_each_warning_emitted_once(tmp_path: Path) -> None:
    path = write(tmp_path, "use_unsloth: true\nevaluation_strategy: steps\n")
    _, warnings = load(path, "use_unsloth=false", "evaluation_strategy=epoch")
    assert len(warnings) == 2
    assert sum("'use_unsloth' is ignored" in w for w in warnings) == 1
    assert sum("'evaluation_strategy' was renamed" in w for w in warnings) == 1


def test_ddp_timeout_passes_through_without_warning() -> None:
    config, warnings = load(None, "ddp_timeout=3600")
    assert warnings == []
    assert config.training_arguments == {"ddp_timeout": 3600}


def test_default_warn_goes_to_logging_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, "flash_attn: fa2\n")
    with caplog.at_level("WARNING", logger="prefkit.config"):
        load_config(path)
        load_config(path)
    messages = [r.getMessage() for r in caplog.records if "'flash_attn' is ignored" in r.getMessage()]
    assert len(messages) == 1


# ----------------------------------------------------------------------------------- resolved output
def test_resolved_is_json_serialisable_and_flat() -> None:
    config, _ = load(CONFIGS / "notebook_sft.yaml", "pref_loss=simpo")
    resolved = config.resolved()
    assert json.loads(json.dumps(resolved)) == resolved
    assert "config_file" not in resolved and "training_arguments" not in resolved
    assert resolved["optim"] == "adamw_torch_fused"
    assert resolved["pref_beta"] == 2.0 and resolved["lora_alpha"] == 16
    assert set(config.sources()) == set(resolved)


def test_config_built_in_code_is_validated() -> None:
    with pytest.raises(ValueError, match="bf16 and fp16"):
        Config(bf16=True, fp16=True)
    with pytest.raises(ValueError, match="did you mean 'adamw_torch'"):
        Config(training_arguments={"optim": "adamw_torchh"})
    config = Config(pref_loss="simpo")
    assert config.pref_beta == 2.0
    assert config.sources()["pref_loss"] == "set in code"


def test_transformers_is_imported_only_for_keys_prefkit_does_not_own() -> None:
    # `prefkit --help` and configs made only of prefkit keys must not pay for importing torch.
    code = (
        "import sys; from prefkit.config import load_config; "
        "load_config(None, ['seed=1', 'lr_scheduler_type=cosine', 'use_unsloth=true'], warn=lambda m: None); "
        "assert 'transformers' not in sys.modules, 'transformers imported'"
    )
    src = Path(__file__).parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_checkpointing_under_both_names_in_one_layer_is_refused_at_load(tmp_path: Path) -> None:
    """gradient_checkpointing is activation_checkpointing's deprecated alias (transformers 5.23): one key."""
    path = tmp_path / "gc.yaml"
    path.write_text("gradient_checkpointing: true\nactivation_checkpointing: false\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.problems == [
        f"{path}:2: 'activation_checkpointing' and 'gradient_checkpointing' ({path}:1) both set "
        "activation_checkpointing -- keep only 'activation_checkpointing'"
    ]


def test_checkpointing_on_the_command_line_overrides_the_files_other_name(tmp_path: Path) -> None:
    path = tmp_path / "gc.yaml"
    path.write_text("gradient_checkpointing: true\ngradient_checkpointing_kwargs: {use_reentrant: true}\n")
    config = load_config(path, ["activation_checkpointing=false", "activation_checkpointing_kwargs={}"])
    assert config.training_arguments == {
        "activation_checkpointing": False,
        "activation_checkpointing_kwargs": {},
    }
    assert config.sources()["activation_checkpointing"] == "command line"
