"""prefkit's single run configuration: one typed :class:`Config` read from a YAML file plus ``key=value``
overrides from the command line.

The keys are flat and a superset of LLaMA-Factory's keys for its ``sft`` and ``dpo`` stages, so that a
LLaMA-Factory YAML loads as is.  Any other key that names a field of ``transformers.TrainingArguments`` is
type-checked and passed through in :attr:`Config.training_arguments`.  Keys of tools prefkit does not use
are accepted with one warning each (:data:`IGNORED_KEYS`), and keys transformers v5 renamed are mapped to
their new names (:data:`RENAMED_KEYS`).

Every problem in a file is collected and reported at once, each as ``file:line: key: got X -- expected Y``,
because a user fixing a config one error per run is the thing this module exists to prevent.

transformers is imported lazily -- only when a key is not one of prefkit's own -- so that importing this
module (and ``prefkit --help``) stays fast.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import logging
import os
import re
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from prefkit.errors import PrefkitError

__all__ = [
    "IGNORED_KEYS",
    "RENAMED_KEYS",
    "Config",
    "ConfigError",
    "load_config",
    "parse_override",
]

logger = logging.getLogger(__name__)

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

# Keys of LLaMA-Factory (and of the libraries it wraps) that prefkit accepts but does not use, each with
# what prefkit does instead.  This is the one place that list lives: the loader warns from it, and the
# unknown-key suggestions draw on it.
IGNORED_KEYS: dict[str, str] = {
    "use_unsloth": "prefkit does not use Unsloth; training runs on plain transformers + peft",
    "use_unsloth_gc": "prefkit does not use Unsloth; set gradient_checkpointing: true for the stock "
    "gradient checkpointing",
    "enable_liger_kernel": "prefkit does not use Liger kernels; it runs the model's own modules",
    "flash_attn": "prefkit leaves the attention implementation to transformers' default (sdpa)",
    "quantization_method": "prefkit quantises with bitsandbytes; quantization_bit (4 or 8) selects it",
    "quantization_type": "prefkit's 4-bit quantisation is bitsandbytes NF4",
    "double_quantization": "prefkit's 4-bit quantisation always uses bitsandbytes double quantisation",
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
    "packing": "prefkit does not pack examples; each example is its own padded row",
    "neat_packing": "prefkit does not pack examples; each example is its own padded row",
    "tokenized_path": "prefkit tokenises from the dataset on every run",
    "streaming": "prefkit loads datasets fully into memory",
    "buffer_size": "prefkit loads datasets fully into memory (no streaming buffer)",
    "mix_strategy": "prefkit concatenates the datasets listed in `dataset`",
    "interleave_probs": "prefkit concatenates the datasets listed in `dataset`",
    "export_dir": "use `prefkit export` to merge and export a trained model",
    "infer_backend": "prefkit's chat/eval commands run on transformers",
}

# Keys that are Config fields but not something a user writes in a config file.
_RESERVED_KEYS = frozenset({"training_arguments", "config_file"})

# transformers' SchedulerType values as of v5.  A fast path only: a value outside it is checked against
# the installed transformers, so a scheduler added later still validates.
_KNOWN_SCHEDULERS = frozenset({
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
    "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
    "warmup_stable_decay", "greedy",
})  # fmt: skip

# Extra words for a few values users bring from elsewhere; appended to the "expected ..." sentence.
_VALUE_HINTS: dict[tuple[str, Any], str] = {
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
_EXPECTED: dict[str, str] = {
    "model_name_or_path": "a model id or local path, or a list of them",
    "lora_target": "a list of module names or a comma-separated string such as 'q_proj,v_proj'",
    "dataset": "a dataset name, a comma-separated string of names or a list of names",
    "eval_dataset": "a dataset name, a comma-separated string of names or a list of names",
    "columns": "a mapping of column roles to column names",
    "max_steps": "-1 or an integer > 0",
    "val_size": "a number >= 0: a fraction below 1, or a whole number of examples from 1 up",
    "resume_from_checkpoint": "'auto', false (or null) or the path of a checkpoint",
    "report_to": "a reporting integration name or a list of them",
}


def _split_names(value: Any) -> Any:
    """Accept ``"a, b"`` as well as ``[a, b]``, as LLaMA-Factory does for its list-valued keys."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple):
        return [item.strip() if isinstance(item, str) else item for item in value]
    return value


class Config(BaseModel):
    """Everything one prefkit run needs.  Build it with :func:`load_config`; its field names are
    LLaMA-Factory's where LLaMA-Factory has the key."""

    model_config = ConfigDict(extra="forbid", frozen=False)

    # ----------------------------------------------------------------------------------------- model
    model_name_or_path: str | list[str] | None = Field(
        default=None,
        description="Hugging Face model id or local path of the model to train. A list is a list of "
        "candidates tried in order (the first one that can be loaded is used). Defaults to `None`, which "
        "is an error at training time. LLaMA-Factory key.",
    )
    adapter_name_or_path: str | None = Field(
        default=None,
        description="Path or id of a LoRA adapter to load on top of the model before training, e.g. the "
        "output of an SFT run that preference optimisation continues from. Defaults to `None`. "
        "LLaMA-Factory key.",
    )
    trust_remote_code: bool = Field(
        default=False,
        description="Whether to allow models and tokenizers whose code lives in the model repository. "
        "Defaults to `False`. LLaMA-Factory key.",
    )
    cache_dir: str | None = Field(
        default=None,
        description="prefkit's cache folder (downloaded models and datasets). Defaults to `None`, which "
        "means the environment variable `PREFKIT_CACHE`, else `~/.cache/prefkit`. LLaMA-Factory key.",
    )

    # ----------------------------------------------------------------------------------------- method
    stage: Literal["sft", "dpo"] = Field(
        default="dpo",
        description="Training stage: `sft` (supervised fine-tuning on conversations) or `dpo` (preference "
        "optimisation on chosen/rejected pairs with the loss in `pref_loss`). Defaults to `dpo`. "
        "LLaMA-Factory key.",
    )
    do_train: bool = Field(
        default=True,
        description="Whether to train. Defaults to `True`. LLaMA-Factory key.",
    )
    finetuning_type: Literal["lora", "full"] = Field(
        default="lora",
        description="`lora` trains low-rank adapters on a frozen model; `full` trains every weight. "
        "Defaults to `lora`. LLaMA-Factory key.",
    )
    lora_rank: int = Field(
        default=8,
        gt=0,
        description="Rank of the LoRA matrices. Defaults to `8`. LLaMA-Factory key.",
    )
    lora_alpha: int | None = Field(
        default=None,
        gt=0,
        description="LoRA scaling numerator (the update is scaled by `lora_alpha / lora_rank`). Defaults "
        "to `None`, which means `2 * lora_rank` as in LLaMA-Factory. LLaMA-Factory key.",
    )
    lora_dropout: float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        description="Dropout probability on the LoRA input. Defaults to `0.0`. LLaMA-Factory key.",
    )
    lora_target: list[str] = Field(
        default_factory=lambda: ["all"],
        min_length=1,
        description="Names of the modules to put LoRA adapters on, as a list or a comma-separated string "
        "(`q_proj,v_proj`). `all` means every linear layer except the output head. Defaults to `all`. "
        "LLaMA-Factory key.",
    )
    quantization_bit: Literal[4, 8] | None = Field(
        default=None,
        description="Load the frozen base model quantised to 4 or 8 bits with bitsandbytes (QLoRA). Needs "
        "`finetuning_type: lora`. Defaults to `None` (no quantisation). LLaMA-Factory key.",
    )

    # ------------------------------------------------------------------------------------------- data
    dataset: list[str] | None = Field(
        default=None,
        description="Names of the training datasets, as a list or a comma-separated string; each name is "
        "looked up in `dataset_dir/dataset_info.json`. Defaults to `None`. LLaMA-Factory key.",
    )
    eval_dataset: list[str] | None = Field(
        default=None,
        description="Names of the evaluation datasets, looked up like `dataset`. Defaults to `None`. "
        "LLaMA-Factory key.",
    )
    dataset_dir: str = Field(
        default="data",
        description="Folder holding `dataset_info.json` and the files it names. Defaults to `data`. "
        "LLaMA-Factory key.",
    )
    train_file: str | None = Field(
        default=None,
        description="Path of a training data file (JSON, JSONL, CSV or Parquet), used without a "
        "`dataset_info.json` entry. Defaults to `None`. prefkit key.",
    )
    eval_file: str | None = Field(
        default=None,
        description="Path of an evaluation data file, like `train_file`. Defaults to `None`. prefkit key.",
    )
    formatting: str | None = Field(
        default=None,
        description="Force the data format instead of detecting it from the records. Defaults to `None` "
        "(detect). LLaMA-Factory key (in `dataset_info.json` there).",
    )
    columns: dict[str, str] | None = Field(
        default=None,
        description="Map of column roles (`prompt`, `chosen`, `rejected`, `messages`, ...) to the column "
        "names in the data. Defaults to `None` (detect). LLaMA-Factory key (in `dataset_info.json` there).",
    )
    template: str | None = Field(
        default=None,
        description="Name of the chat template to format conversations with. Defaults to `None`, which "
        "means the tokenizer's own chat template. LLaMA-Factory key.",
    )
    cutoff_len: int = Field(
        default=2048,
        gt=0,
        description="Maximum length in tokens of one tokenised example (prompt plus reply). Defaults to "
        "`2048`. LLaMA-Factory key.",
    )
    max_samples: int | None = Field(
        default=None,
        gt=0,
        description="Use at most this many training examples from each data file (the first ones). "
        "Defaults to `None` (all). LLaMA-Factory key.",
    )
    max_eval_samples: int | None = Field(
        default=None,
        gt=0,
        description="Use at most this many evaluation examples. Defaults to `None` (all). prefkit key.",
    )
    val_size: float = Field(
        default=0.0,
        ge=0.0,
        description="Hold out part of the training data for evaluation: a value below 1 is a fraction, a "
        "value from 1 up a whole number of examples. Defaults to `0.0` (none). LLaMA-Factory key.",
    )
    on_bad_example: Literal["error", "skip"] = Field(
        default="error",
        description="What to do with an example that cannot be used (too long, empty reply, ...): `error` "
        "stops with every such example listed, `skip` drops them and reports a count. Defaults to `error`. "
        "prefkit key.",
    )

    # ----------------------------------------------------------------------------- preference loss
    pref_loss: Literal["sigmoid", "hinge", "ipo", "kto_pair", "orpo", "simpo"] = Field(
        default="sigmoid",
        description="Preference loss: `sigmoid` (DPO), `hinge` (SLiC), `ipo`, `kto_pair`, `orpo` (no "
        "reference model, adds the SFT loss) or `simpo` (no reference model, length-normalised, with a "
        "margin `simpo_gamma`). Defaults to `sigmoid`. LLaMA-Factory key.",
    )
    pref_beta: float | None = Field(
        default=None,
        gt=0.0,
        description="The beta of the preference loss: how far the policy may move from the reference "
        "(DPO family), or the reward scale (SimPO), or the odds-ratio weight (ORPO). Defaults to `None`, "
        "which means the method default: `2.0` for `simpo`, `0.1` for every other loss. LLaMA-Factory key.",
    )
    simpo_gamma: float | None = Field(
        default=None,
        ge=0.0,
        description="SimPO's target reward margin. Only used with `pref_loss: simpo`. Defaults to `None`, "
        "which means `0.5` for `simpo`. LLaMA-Factory key.",
    )
    pref_ftx: float = Field(
        default=0.0,
        ge=0.0,
        description="Weight of an SFT (negative log-likelihood) loss on the chosen reply added to the "
        "preference loss. Defaults to `0.0`. LLaMA-Factory key.",
    )
    dpo_label_smoothing: float = Field(
        default=0.0,
        ge=0.0,
        le=0.5,
        description="Assumed probability that a preference label is flipped (conservative DPO / robust "
        "DPO), for the `sigmoid` loss. Defaults to `0.0`. LLaMA-Factory key.",
    )

    # ------------------------------------------------------------------------------------- training
    output_dir: str = Field(
        default="saves/prefkit",
        description="Folder for checkpoints, the final model and `metrics.jsonl`. Defaults to "
        "`saves/prefkit`. LLaMA-Factory key.",
    )
    overwrite_output_dir: bool = Field(
        default=False,
        description="Whether to train into an `output_dir` that already holds a run. Defaults to `False`. "
        "LLaMA-Factory key (removed from TrainingArguments in transformers v5; prefkit handles it).",
    )
    per_device_train_batch_size: int = Field(
        default=8,
        gt=0,
        description="Training examples (pairs, for preference stages) per device per step. Defaults to "
        "`8`. LLaMA-Factory key.",
    )
    per_device_eval_batch_size: int = Field(
        default=8,
        gt=0,
        description="Evaluation examples per device per step. Defaults to `8`. LLaMA-Factory key.",
    )
    gradient_accumulation_steps: int = Field(
        default=1,
        gt=0,
        description="Number of steps whose gradients are summed before each optimiser update. Defaults to "
        "`1`. LLaMA-Factory key.",
    )
    learning_rate: float = Field(
        default=5e-5,
        gt=0.0,
        description="Peak learning rate. Defaults to `5e-5`. LLaMA-Factory key.",
    )
    lr_scheduler_type: str = Field(
        default="linear",
        description="Learning-rate schedule, one of transformers' `SchedulerType` values (`linear`, "
        "`cosine`, `constant_with_warmup`, ...). Defaults to `linear`. LLaMA-Factory key.",
    )
    warmup_ratio: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Fraction of the training steps spent warming the learning rate up from 0. Defaults to "
        "`0.0`. LLaMA-Factory key (removed from TrainingArguments in transformers v5, where prefkit passes "
        "it as a fractional `warmup_steps`).",
    )
    num_train_epochs: float = Field(
        default=3.0,
        gt=0.0,
        description="Number of passes over the training data. Defaults to `3.0`. LLaMA-Factory key.",
    )
    max_steps: int = Field(
        default=-1,
        description="If > 0, the number of optimiser steps to train for, overriding `num_train_epochs`. "
        "Defaults to `-1` (use `num_train_epochs`). LLaMA-Factory key.",
    )
    bf16: bool = Field(
        default=False,
        description="Train in bfloat16 mixed precision. Defaults to `False`. LLaMA-Factory key.",
    )
    fp16: bool = Field(
        default=False,
        description="Train in float16 mixed precision. Defaults to `False`. LLaMA-Factory key.",
    )
    max_grad_norm: float = Field(
        default=1.0,
        ge=0.0,
        description="Clip the gradient norm to this value; `0` turns clipping off. Defaults to `1.0`. "
        "LLaMA-Factory key.",
    )
    logging_steps: int = Field(
        default=10,
        gt=0,
        description="Log metrics every this many optimiser steps. Defaults to `10`. LLaMA-Factory key.",
    )
    save_steps: int = Field(
        default=500,
        gt=0,
        description="Save a checkpoint every this many optimiser steps. Defaults to `500`. "
        "LLaMA-Factory key.",
    )
    save_total_limit: int | None = Field(
        default=None,
        gt=0,
        description="Keep at most this many checkpoints, deleting the oldest. Defaults to `None` (keep "
        "all). LLaMA-Factory key.",
    )
    eval_strategy: Literal["no", "steps", "epoch"] = Field(
        default="no",
        description="When to evaluate: `no`, every `eval_steps` steps, or every epoch. Defaults to `no`. "
        "LLaMA-Factory key (`evaluation_strategy` before transformers v4.46).",
    )
    eval_steps: int | None = Field(
        default=None,
        gt=0,
        description="Evaluate every this many steps when `eval_strategy: steps`. Defaults to `None`, "
        "which means `logging_steps`. LLaMA-Factory key.",
    )
    plot_loss: bool = Field(
        default=True,
        description="Write loss (and, for preference stages, reward) curves as PNG files into "
        "`output_dir` after training. Defaults to `True`. LLaMA-Factory key.",
    )
    report_to: str | list[str] = Field(
        default="none",
        description="Integrations to report metrics to (`wandb`, `tensorboard`, ...), or `none`. "
        "Defaults to `none`. LLaMA-Factory key.",
    )
    seed: int = Field(
        default=42,
        description="Random seed for initialisation, shuffling and dropout. Defaults to `42`. "
        "LLaMA-Factory key.",
    )
    resume_from_checkpoint: str | Literal[False] = Field(
        default="auto",
        description="`auto` resumes from the newest checkpoint in `output_dir` if there is one; `false` "
        "(or `null`, as LLaMA-Factory writes it) starts afresh; any other string is the path of the "
        "checkpoint to resume from (`true` reads as `auto`). Defaults to `auto`. LLaMA-Factory key.",
    )

    # ------------------------------------------------------------------------------- not user keys
    training_arguments: dict[str, Any] = Field(
        default_factory=dict,
        description="Fields of `transformers.TrainingArguments` that are not prefkit keys (`optim`, "
        "`weight_decay`, `gradient_checkpointing`, ...), as the user set them, type-checked. Written at the "
        "top level of the YAML file; passed to TrainingArguments unchanged.",
    )
    config_file: str | None = Field(
        default=None,
        exclude=True,
        description="The YAML file this config was read from, if any.",
    )

    # Where each key's value came from ("cfg.yaml:12" or "command line"); set by load_config.
    _origins: dict[str, str] = PrivateAttr(default_factory=dict)

    # ----------------------------------------------------------------------------------- validators
    @field_validator("lora_target", "dataset", "eval_dataset", mode="before")
    @classmethod
    def _split_comma_lists(cls, value: Any, info: ValidationInfo) -> Any:
        names = _split_names(value)
        # An empty dataset list means "no dataset", not a list of zero datasets to concatenate.
        if info.field_name != "lora_target" and names == []:
            return None
        return names

    @field_validator("lora_target")
    @classmethod
    def _check_lora_target(cls, value: list[str]) -> list[str]:
        if "all" in value and len(value) > 1:
            raise ValueError("expected 'all' alone or a list of module names, not both")
        return value

    @field_validator("val_size")
    @classmethod
    def _check_val_size(cls, value: float) -> float:
        # 2.5 is neither a fraction nor a count; silently rounding it would hide a typo.
        if value >= 1 and value != int(value):
            raise ValueError("expected a fraction below 1 or a whole number of examples from 1 up")
        return value

    @field_validator("max_steps")
    @classmethod
    def _check_max_steps(cls, value: int) -> int:
        if value != -1 and value <= 0:
            raise ValueError(f"expected {_EXPECTED['max_steps']}")
        return value

    @field_validator("lr_scheduler_type")
    @classmethod
    def _check_scheduler(cls, value: str) -> str:
        if value in _KNOWN_SCHEDULERS:
            return value
        from transformers import SchedulerType  # lazy: only for a value not in the fast-path set

        allowed = [member.value for member in SchedulerType]
        if value not in allowed:
            raise ValueError(_one_of(allowed, value))
        return value

    @field_validator("eval_strategy", mode="before")
    @classmethod
    def _no_is_not_false(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `no` as false; `eval_strategy: no` means the string.
        return "no" if value is False else value

    @field_validator("resume_from_checkpoint", mode="before")
    @classmethod
    def _normalise_resume(cls, value: Any) -> Any:
        # LLaMA-Factory's yamls write `resume_from_checkpoint: null`; HF Trainer reads `True` as "the
        # newest checkpoint", which is what "auto" means here.
        if value is None or value is False:
            return False
        if value is True:
            return "auto"
        if isinstance(value, str) and value.strip().lower() in {"", "false", "null", "none", "no"}:
            return False
        return value

    @field_validator("training_arguments")
    @classmethod
    def _check_training_arguments(cls, value: dict[str, Any]) -> dict[str, Any]:
        # load_config validates these key by key (to report file lines); this re-check keeps a Config built
        # directly in Python just as safe.
        if not value:
            return value
        names = _training_argument_names()
        problems, checked = [], {}
        for key, item in value.items():
            if key not in names or key in Config.model_fields:
                problems.append(f"{key}: not a TrainingArguments field that prefkit passes through")
                continue
            checked[key], problem = _validate_training_argument(key, item)
            if problem:
                problems.append(problem)
        if problems:
            raise ValueError("; ".join(problems))
        return checked

    @model_validator(mode="after")
    def _fill_defaults_and_check(self, info: ValidationInfo) -> Config:
        # Derived defaults are written through __dict__ so that they stay out of model_fields_set: that set
        # is how sources() tells a user's value from a filled-in one.
        if self.lora_alpha is None:
            self.__dict__["lora_alpha"] = 2 * self.lora_rank
        # LLaMA-Factory's stock pref_beta is 0.1 whatever the loss, which is wrong for SimPO: its beta
        # scales a length-normalised reward and the SimPO authors use beta 2.0 with gamma 0.5 (beta 0.1
        # there gives almost no gradient signal).  So the default depends on the loss.
        if self.pref_beta is None:
            self.__dict__["pref_beta"] = 2.0 if self.pref_loss == "simpo" else 0.1
        if self.simpo_gamma is None and self.pref_loss == "simpo":
            self.__dict__["simpo_gamma"] = 0.5
        # load_config reports these itself, with file lines; a Config built directly raises here.
        if not (info.context or {}).get("defer_cross_checks"):
            problems = self._cross_field_problems()
            if problems:
                raise ValueError("; ".join(message for _, message in problems))
        return self

    def _cross_field_problems(self) -> list[tuple[tuple[str, ...], str]]:
        """Problems that involve more than one key, each with the keys involved."""
        problems: list[tuple[tuple[str, ...], str]] = []
        if self.bf16 and self.fp16:
            problems.append((("bf16", "fp16"), "bf16 and fp16 are both true -- choose one mixed precision"))
        if self.quantization_bit is not None and self.finetuning_type != "lora":
            problems.append(
                (
                    ("quantization_bit", "finetuning_type"),
                    f"quantization_bit: {self.quantization_bit} needs finetuning_type: lora "
                    "(a quantised model cannot be fully fine-tuned)",
                )
            )
        warmup_steps = self.training_arguments.get("warmup_steps")
        if self.warmup_ratio and warmup_steps:
            problems.append(
                (
                    ("warmup_ratio", "warmup_steps"),
                    "warmup_ratio and warmup_steps are both set -- set only one",
                )
            )
        return problems

    # ----------------------------------------------------------------------------------- public API
    def resolved(self) -> dict[str, Any]:
        """Every key's final value (derived defaults filled in), JSON-serialisable, with the
        TrainingArguments passthrough keys merged in flat."""
        values = self.model_dump(mode="json", exclude={"config_file", "training_arguments"})
        values.update(TypeAdapter(dict[str, Any]).dump_python(self.training_arguments, mode="json"))
        return values

    def sources(self) -> dict[str, str]:
        """For every key of :meth:`resolved`, where its value came from: ``"default"``,
        ``"default (2 x lora_rank)"``, ``"method default (<loss>)"``, ``"<file>:<line>"``,
        ``"command line"``, or ``"set in code"`` for a Config built directly in Python."""
        result: dict[str, str] = {}
        for name in type(self).model_fields:
            if name in _RESERVED_KEYS:
                continue
            if name in self._origins:
                result[name] = self._origins[name]
            elif name in self.model_fields_set:
                result[name] = "set in code"
            elif name == "lora_alpha":
                result[name] = "default (2 x lora_rank)"
            elif name in {"pref_beta", "simpo_gamma"} and getattr(self, name) is not None:
                result[name] = f"method default ({self.pref_loss})"
            else:
                result[name] = "default"
        for name in self.training_arguments:
            result[name] = self._origins.get(name, "set in code")
        return result


# ------------------------------------------------------------------------------ TrainingArguments
@functools.cache
def _training_argument_hints() -> dict[str, Any]:
    from transformers import TrainingArguments  # lazy: pulls in torch

    fields = dataclasses.fields(TrainingArguments)
    init_fields = {f.name for f in fields if f.init and not f.name.startswith("_")}
    hints = typing.get_type_hints(TrainingArguments)
    return {name: hints[name] for name in init_fields if name in hints}


def _training_argument_names() -> frozenset[str]:
    return frozenset(_training_argument_hints())


def _enums_in(hint: Any) -> list[type[enum.Enum]]:
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return [hint]
    return [found for arg in typing.get_args(hint) for found in _enums_in(arg)]


def _validate_training_argument(key: str, value: Any) -> tuple[Any, str | None]:
    """Check one passthrough value against its TrainingArguments type hint.  Returns the value (in plain,
    JSON-friendly form) and a problem sentence, or None."""
    hint = _training_argument_hints()[key]
    expected = _describe(hint)
    enums = _enums_in(hint)
    if value is False and any("no" in {m.value for m in e} for e in enums):
        value = "no"  # YAML 1.1 reads a bare `save_strategy: no` as false
    try:
        checked = TypeAdapter(hint).validate_python(value)
    except ValidationError:
        return value, f"{key}: got {value!r} -- expected {expected}"
    # Hints such as `optim: OptimizerNames | str` accept any string; the enum says which ones work.
    if isinstance(checked, enum.Enum):
        checked = checked.value
    if enums and isinstance(checked, str):
        allowed = [member.value for enum_type in enums for member in enum_type]
        if checked not in allowed:
            return value, f"{key}: got {value!r} -- {_one_of(allowed, checked)}"
    return checked, None


# -------------------------------------------------------------------------------- error sentences
def _one_of(allowed: Sequence[Any], value: Any, *, suggest: bool = True) -> str:
    """'expected one of a, b, c -- did you mean 'b'?'"""
    close: list[str] = []
    by_lower = {str(a).lower(): a for a in allowed}
    if suggest and isinstance(value, str):
        close = difflib.get_close_matches(value.lower(), list(by_lower), n=1, cutoff=0.6)
    if close and len(allowed) > 12:
        # Forty optimizer names bury the one line that matters; the suggestion is enough.
        shown = ", ".join(_yaml_scalar(a) for a in allowed[:3])
        text = f"expected one of {len(allowed)} values ({shown}, ...)"
    else:
        text = "expected one of " + ", ".join(_yaml_scalar(a) for a in allowed)
    if close:
        text += f" -- did you mean {by_lower[close[0]]!r}?"
    return text


def _describe(hint: Any) -> str:
    """A type hint in words: `int | None` -> 'an integer or null'."""
    if hint is type(None) or hint is None:
        return "null"
    if hint is Any:
        return "any value"
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(str(member.value) for member in hint)
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(_yaml_scalar(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if any(isinstance(a, type) and issubclass(a, enum.Enum) for a in args):
            # `SaveStrategy | str`: the str only exists so the enum's values can be written as strings.
            args = tuple(a for a in args if a is not str)
        parts = [_describe(a) for a in args if a is not type(None)]
        if type(None) in args:
            parts.append("null")
        return " or ".join(dict.fromkeys(parts))
    if hint is list or origin is list:
        return "a list"
    if hint is dict or origin is dict:
        return "a mapping"
    return f"a value of type {getattr(hint, '__name__', hint)}"


def _constraint_words(field_name: str) -> str:
    words = []
    for item in Config.model_fields[field_name].metadata:
        for attr, symbol in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            bound = getattr(item, attr, None)
            if bound is not None:
                # `> 0`, not `> 0.0`: the bound as a user would write it.
                shown = int(bound) if isinstance(bound, float) and bound.is_integer() else bound
                words.append(f"{symbol} {shown}")
    return " and ".join(words)


def _expected_for_field(field_name: str) -> str:
    if field_name in _EXPECTED:
        return _EXPECTED[field_name]
    annotation = Config.model_fields[field_name].annotation
    args = typing.get_args(annotation)
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args
    if optional:
        non_none = [a for a in args if a is not type(None)]
        annotation = non_none[0] if len(non_none) == 1 else annotation
    text = _describe(annotation)
    constraint = _constraint_words(field_name)
    if constraint:
        text = f"{text} {constraint}"
    if optional:
        text += " (or null)"
    return text


def _field_problem(key: str, value: Any, errors: list[dict[str, Any]]) -> str:
    """Turn pydantic's errors for one key into one sentence."""
    for error in errors:
        # Our own validators' messages already read "expected ...".
        if error["type"] in ("value_error", "assertion_error"):
            message = str(error.get("ctx", {}).get("error", error["msg"]))
            return f"{key}: got {value!r} -- {message}"
    hint = None
    if isinstance(value, str | int | float):
        hint = _VALUE_HINTS.get((key, value.lower() if isinstance(value, str) else value))
    annotation = Config.model_fields[key].annotation
    literal = _strip_optional(annotation)
    if key not in _EXPECTED and typing.get_origin(literal) is Literal:
        # A known hint beats a spelling guess: 'dpo' is one letter from 'ipo' but means 'sigmoid'.
        text = f"{key}: got {value!r} -- {_one_of(typing.get_args(literal), value, suggest=hint is None)}"
        if literal is not annotation:
            text += " (or null)"
    else:
        text = f"{key}: got {value!r} -- expected {_expected_for_field(key)}"
    if hint:
        text += f"; {hint}"
    return text


def _strip_optional(annotation: Any) -> Any:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return non_none[0]
    return annotation


# -------------------------------------------------------------------------------------- YAML input
_FLOAT_WITHOUT_DOT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-5` as a float.  PyYAML follows YAML 1.1, where a float needs a dot
    (`1.0e-5`), so `learning_rate: 1e-5` would otherwise arrive as the string '1e-5'."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_WITHOUT_DOT, list("-+0123456789"))


@dataclasses.dataclass
class _Entry:
    key: str  # as the user wrote it
    value: Any
    origin: str  # "cfg.yaml:12" or "command line"
    order: int  # file line, or a number after every line for the command line
    text: str | None = None  # the override as typed, for messages


def _read_yaml(path: str) -> tuple[list[_Entry], list[tuple[int, str]]]:
    """The top-level entries of a YAML file, each with its line, and the duplicate-key problems."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None

    loader = _Loader(text)
    try:
        # Composing (not constructing) keeps the node tree, and with it each key's line.
        root = loader.get_single_node()
        if root is None:  # an empty file: every key keeps its default
            return [], []
        if not isinstance(root, yaml.MappingNode):
            kind = "a list" if isinstance(root, yaml.SequenceNode) else "a single value"
            raise ConfigError(
                f"{path}:{root.start_mark.line + 1}: the top level is {kind}; a config file must be a "
                "mapping of `key: value` lines"
            )
        entries: list[_Entry] = []
        problems: list[tuple[int, str]] = []
        first_line: dict[Any, int] = {}
        for key_node, value_node in root.value:
            line = key_node.start_mark.line + 1
            key = loader.construct_object(key_node, deep=True)
            value = loader.construct_object(value_node, deep=True)
            if not isinstance(key, str):
                problems.append((line, f"{path}:{line}: key {key!r} is not a name"))
                continue
            if key in first_line:
                problems.append(
                    (line, f"{path}:{line}: duplicate key {key!r} (first given on line {first_line[key]})")
                )
            else:
                first_line[key] = line
            entries.append(_Entry(key, value, f"{path}:{line}", line))
        return entries, problems
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        problem = exc.problem or exc.context or "cannot be parsed"
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()


def parse_override(text: str) -> tuple[str, Any]:
    """``"learning_rate=1e-5"`` -> ``("learning_rate", 1e-05)``.  The value is read as YAML, so
    ``lora_target=[q_proj,v_proj]``, ``bf16=true`` and ``resume_from_checkpoint=null`` work."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{COMMAND_LINE}: expected key=value, got {text!r}")
    try:
        value = yaml.load(raw.strip(), Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{COMMAND_LINE}: invalid value in {text!r}: {problem}") from None
    return key, value


# ------------------------------------------------------------------------------------------ loader
def _default_warn(message: str) -> None:
    # Like the warnings module's "default" action: a message is shown once per process, so a config loaded
    # twice (the CLI, then a subprocess-less trainer) does not repeat itself.
    if message not in _WARNED:
        _WARNED.add(message)
        logger.warning(message)


_WARNED: set[str] = set()


def load_config(
    path: str | os.PathLike[str] | None,
    overrides: Sequence[str] = (),
    *,
    warn: Callable[[str], None] | None = None,
) -> Config:
    """Read a config from a YAML file (or none), apply ``key=value`` overrides, validate everything, and
    raise one :class:`ConfigError` listing every problem -- or return the :class:`Config`.

    Warnings (renamed keys, keys prefkit ignores) go to ``warn``, each once; by default they are logged."""
    emit = warn or _default_warn
    warned: set[str] = set()

    def warn_once(tag: str, message: str) -> None:
        if tag not in warned:
            warned.add(tag)
            emit(message)

    file_name = os.fspath(path) if path is not None else None
    problems: list[tuple[int, str]] = []
    entries: list[_Entry] = []
    if file_name is not None:
        entries, problems = _read_yaml(file_name)
    first_override = (entries[-1].order if entries else 0) + 10**9
    for index, text in enumerate(overrides):
        order = first_override + index
        try:
            key, value = parse_override(text)
        except ConfigError as exc:
            problems.append((order, str(exc)))
            continue
        entries.append(_Entry(key, value, COMMAND_LINE, order, text))

    config_keys = frozenset(Config.model_fields) - _RESERVED_KEYS
    values: dict[str, Any] = {}  # canonical key -> value, later entries winning
    origins: dict[str, str] = {}
    orders: dict[str, int] = {}
    passthrough: set[str] = set()
    # Which spelling set each canonical key within one layer (the file, or the command line), to catch
    # `evaluation_strategy` and `eval_strategy` given together.
    spelled: dict[tuple[bool, str], _Entry] = {}

    for entry in entries:
        key = entry.key
        if key in config_keys:
            canonical = key
        elif key in RENAMED_KEYS:
            canonical = RENAMED_KEYS[key]
            warn_once(
                f"renamed:{key}",
                f"{entry.origin}: '{key}' was renamed to '{canonical}' in transformers; "
                f"read as {canonical}: {_yaml_scalar(entry.value)}",
            )
        elif key in IGNORED_KEYS:
            warn_once(f"ignored:{key}", f"{entry.origin}: '{key}' is ignored -- {IGNORED_KEYS[key]}")
            continue
        elif key not in _RESERVED_KEYS and key in _training_argument_names():
            canonical = key
        else:
            problems.append((entry.order, _unknown_key_message(entry, config_keys)))
            continue

        layer = (entry.origin == COMMAND_LINE, canonical)
        earlier = spelled.get(layer)
        if earlier is not None and earlier.key != entry.key:
            problems.append(
                (
                    entry.order,
                    f"{entry.origin}: '{entry.key}' and '{earlier.key}' ({earlier.origin}) both set "
                    f"{canonical} -- keep only '{canonical}'",
                )
            )
        spelled[layer] = entry
        values[canonical] = entry.value
        origins[canonical] = entry.origin
        orders[canonical] = entry.order
        if canonical not in config_keys:
            passthrough.add(canonical)

    training_arguments: dict[str, Any] = {}
    for key in sorted(passthrough, key=orders.__getitem__):
        checked, problem = _validate_training_argument(key, values.pop(key))
        if problem:
            problems.append((orders[key], f"{origins[key]}: {problem}"))
        else:
            training_arguments[key] = checked

    context = {"defer_cross_checks": True}
    data = {**values, "training_arguments": training_arguments, "config_file": file_name}
    config: Config | None = None
    try:
        config = Config.model_validate(data, context=context)
    except ValidationError as exc:
        by_key: dict[str, list[dict[str, Any]]] = {}
        for error in exc.errors():
            key = str(error["loc"][0]) if error["loc"] else ""
            by_key.setdefault(key, []).append(dict(error))
        for key, errors in by_key.items():
            if key in values:
                where = origins[key]
                problems.append((orders[key], f"{where}: {_field_problem(key, values[key], errors)}"))
            else:  # not expected: every user key is in `values`
                problems.append((0, "; ".join(f"{key}: {e['msg']}" for e in errors)))
        # Validate again without the bad keys, so cross-key problems show up in this same report.
        good = {k: v for k, v in data.items() if k not in by_key}
        try:
            config = Config.model_validate(good, context=context)
        except ValidationError:
            config = None

    if config is not None:
        for keys, message in config._cross_field_problems():
            given = [k for k in keys if k in origins]
            # Report at the last of the keys the user wrote: that is usually the one just added.
            at = max(given, key=orders.__getitem__) if given else None
            where = origins[at] if at else "config"
            problems.append((orders[at] if at else 0, f"{where}: {message}"))

    if problems:
        problems.sort(key=lambda item: item[0])
        raise ConfigError([message for _, message in problems])
    assert config is not None  # no problems means the first validation succeeded

    if "simpo_gamma" in values and config.pref_loss != "simpo":
        warn_once(
            "unused:simpo_gamma",
            f"{origins['simpo_gamma']}: simpo_gamma is only used by pref_loss: simpo; "
            f"ignored with pref_loss: {config.pref_loss}",
        )
    config._origins = origins
    return config


def _unknown_key_message(entry: _Entry, config_keys: frozenset[str]) -> str:
    candidates = sorted(config_keys | _training_argument_names() | set(IGNORED_KEYS) | set(RENAMED_KEYS))
    close = difflib.get_close_matches(entry.key, candidates, n=1, cutoff=0.75)
    if entry.text is not None:
        text = f"{entry.origin}: unknown key {entry.key!r} in {entry.text!r}"
    else:
        text = f"{entry.origin}: unknown key {entry.key!r}"
    if entry.key == "training_arguments":
        text += " -- write TrainingArguments fields at the top level of the file"
    elif close and entry.key not in _RESERVED_KEYS:
        text += f" -- did you mean {close[0]!r}?"
    return text


def _yaml_scalar(value: Any) -> str:
    """A value as the user would write it in YAML (`true`, not `True`)."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()
