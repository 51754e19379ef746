"""The key tables of the config: renamed keys, keys prefkit accepts and ignores, value hints, and the
"expected ..." wording of keys whose type alone would describe them badly. The one place each list lives:
the loader warns from them and the unknown-key suggestions draw on them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefkit.errors import PrefkitError

COMMAND_LINE = "command line"


class ConfigError(PrefkitError):
    """A config that cannot be used.  ``str(e)`` is the full user-facing message, one problem a line;
    ``e.problems`` holds the same lines as a list."""

    def __init__(self, problems: str | Sequence[str]) -> None:
        self.problems: list[str] = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


# Keys that older transformers (or notebooks written for it) use under another name.  Maps the old name to
# the new one; the new one is either a Config field or a TrainingArguments field (passthrough).
RENAMED_KEYS: dict[str, str] = {
    "evaluation_strategy": "eval_strategy",
    "no_cuda": "use_cpu",
}

# Boolean keys of transformers 4 that transformers 5 replaced by a choice: old name -> (new name, the value
# `true` means, the value `false` means).
REPLACED_FLAGS: dict[str, tuple[str, str, str]] = {
    "group_by_length": ("train_sampling_strategy", "group_by_length", "random"),
}

# Keys of LLaMA-Factory (and of the libraries it wraps) that prefkit accepts but does not use, each with
# what prefkit does instead.  This is the one place that list lives: the loader warns from it, and the
# unknown-key suggestions draw on it.
IGNORED_KEYS: dict[str, str] = {
    "use_unsloth": "prefkit does not use Unsloth; training runs on plain transformers + peft",
    "use_unsloth_gc": "prefkit does not use Unsloth; set activation_checkpointing: true for the stock "
    "gradient checkpointing",
    "enable_liger_kernel": "prefkit does not use Liger kernels; it runs the model's own modules",
    "flash_attn": "prefkit leaves the attention implementation to transformers' default (sdpa)",
    "quantization_method": "prefkit quantises with bitsandbytes; quantization_bit (4 or 8) selects it",
    "overwrite_cache": "prefkit does not cache tokenised data between runs",
    "preprocessing_num_workers": "tokenisation runs in-process",
    "save_safetensors": "prefkit always saves safetensors",
    "logging_dir": "metrics go to output_dir/metrics.jsonl",
    "kto_chosen_weight": "this is for LLaMA-Factory's unpaired `kto` stage; prefkit's kto_pair weighs "
    "chosen and rejected equally",
    "kto_rejected_weight": "this is for LLaMA-Factory's unpaired `kto` stage; prefkit's kto_pair weighs "
    "chosen and rejected equally",
    "ref_model": "prefkit uses the base model with the adapter switched off as the reference (LoRA), or "
    "a frozen copy of the starting model (full fine-tuning)",
    "ref_model_quantization_bit": "prefkit uses the base model with the adapter switched off as the "
    "reference (LoRA), or a frozen copy of the starting model (full fine-tuning)",
    "mask_history": "prefkit trains on every assistant turn of a conversation",
    "packing": "prefkit packs preference pairs by itself (batch_layout: auto; pack_length sets the row "
    "length); SFT examples are padded rows",
    "neat_packing": "prefkit packs preference pairs by itself, each attending only within its own pair "
    "(batch_layout: auto); SFT examples are padded rows",
    "tokenized_path": "prefkit tokenises from the dataset on every run",
    "streaming": "prefkit loads datasets fully into memory",
    "buffer_size": "prefkit loads datasets fully into memory (no streaming buffer)",
    "mix_strategy": "prefkit concatenates the datasets listed in `dataset`",
    "interleave_probs": "prefkit concatenates the datasets listed in `dataset`",
    "export_dir": "use `prefkit export` to merge and export a trained model",
    "infer_backend": "prefkit's chat/eval commands run on transformers",
}

# Keys that are Config fields but not something a user writes in a config file.
RESERVED_KEYS = frozenset({"training_arguments", "config_file"})

# transformers' SchedulerType values as of v5.  A fast path only: a value outside it is checked against
# the installed transformers, so a scheduler added later still validates.
KNOWN_SCHEDULERS = frozenset({
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
    "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
    "warmup_stable_decay", "greedy",
})  # fmt: skip

# Extra words for a few values users bring from elsewhere; appended to the "expected ..." sentence.
VALUE_HINTS: dict[tuple[str, Any], str] = {
    ("pref_loss", "dpo"): "the standard DPO loss is called 'sigmoid' (as in LLaMA-Factory and TRL)",
    ("pref_loss", "kto"): "prefkit has no unpaired KTO; 'kto_pair' is KTO on chosen/rejected pairs",
    ("stage", "kto"): "prefkit has no unpaired kto stage; use stage: dpo with pref_loss: kto_pair",
    ("stage", "orpo"): "use stage: dpo with pref_loss: orpo",
    ("stage", "simpo"): "use stage: dpo with pref_loss: simpo",
    ("stage", "pt"): "prefkit does not do continued pre-training",
    ("stage", "rm"): "prefkit does not train reward models",
    ("stage", "ppo"): "prefkit does not do PPO",
    ("finetuning_type", "freeze"): "prefkit supports lora and full fine-tuning only",
    ("finetuning_type", "qlora"): "QLoRA is finetuning_type: lora with quantization_bit: 4",
}

# "expected ..." texts for fields whose type alone would describe them badly.
EXPECTED: dict[str, str] = {
    "model_name_or_path": "a model id or local path, or a list of them",
    "lora_target": "a list of module names or a comma-separated string such as 'q_proj,v_proj'",
    "dataset": "a dataset name, a comma-separated string of names or a list of names",
    "eval_dataset": "a dataset name, a comma-separated string of names or a list of names",
    "columns": "a mapping of column roles to column names",
    "max_steps": "-1 or an integer > 0",
    "val_size": "a number >= 0: a fraction below 1, or a whole number of examples from 1 up",
    "resume_from_checkpoint": "'auto', false (or null) or the path of a checkpoint",
    "report_to": "a reporting integration name or a list of them",
    "seed": "an integer from 0 to 4294967295",
    "output_dir": "the path of a folder (an empty one would mean the current folder)",
}
