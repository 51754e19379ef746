"""The one run configuration: a typed, flat :class:`Config` whose keys are a superset of LLaMA-Factory's
for its ``sft`` and ``dpo`` stages. Each field's description says what it does and its default."""

from __future__ import annotations

from typing import Any

from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)

from prefkit.config.fields import DataKeys, LossKeys, MethodKeys, ModelKeys
from prefkit.config.keys import EXPECTED, KNOWN_SCHEDULERS, RESERVED_KEYS
from prefkit.config.passthrough import training_argument_names, validate_training_argument
from prefkit.config.schedule_fields import TrainingKeys
from prefkit.config.words import one_of


def _split_names(value: Any) -> Any:
    """Accept ``"a, b"`` as well as ``[a, b]``, as LLaMA-Factory does for its list-valued keys."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple):
        return [item.strip() if isinstance(item, str) else item for item in value]
    return value


# Listed last-first: pydantic orders inherited fields from the last base to the first, and this order
# (model, method, data, loss, training) is how `prefkit config` prints them.
class Config(TrainingKeys, LossKeys, DataKeys, MethodKeys, ModelKeys):
    """Everything one prefkit run needs.  Build it with :func:`load_config`; its field names are
    LLaMA-Factory's where LLaMA-Factory has the key."""

    # inf and nan are never a sensible setting; refusing them here also keeps the validators below from
    # meeting them (int(inf) raises OverflowError, not the ValueError pydantic reports).
    model_config = ConfigDict(extra="forbid", frozen=False, allow_inf_nan=False)

    # ------------------------------------------------------------------------------- not user keys
    training_arguments: dict[str, Any] = Field(
        default_factory=dict,
        description="Fields of `transformers.TrainingArguments` that are not prefkit keys (`optim`, "
        "`weight_decay`, `activation_checkpointing`, ...), as the user set them, type-checked. Written at "
        "the top level of the YAML file; passed to TrainingArguments unchanged.",
    )
    config_file: str | None = Field(
        default=None,
        exclude=True,
        description="The YAML file this config was read from, if any.",
    )

    # Where each key's value came from ("cfg.yaml:12" or "command line"); set by load_config.
    _origins: dict[str, str] = PrivateAttr(default_factory=dict)

    # ----------------------------------------------------------------------------------- validators
    @field_validator("lora_target", "dataset", "eval_dataset", "eval_scorers", mode="before")
    @classmethod
    def _split_comma_lists(cls, value: Any, info: ValidationInfo) -> Any:
        names = _split_names(value)
        # An empty dataset list means "no dataset", not a list of zero datasets to concatenate.
        if info.field_name in ("dataset", "eval_dataset") and names == []:
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

    @field_validator("seed")
    @classmethod
    def _check_seed(cls, value: int) -> int:
        # numpy (which transformers.set_seed seeds too) takes 0 .. 2**32 - 1 and raises otherwise.
        if not 0 <= value < 2**32:
            raise ValueError(f"expected {EXPECTED['seed']}")
        return value

    @field_validator("output_dir")
    @classmethod
    def _check_output_dir(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(f"expected {EXPECTED['output_dir']}")
        return value

    @field_validator("max_steps")
    @classmethod
    def _check_max_steps(cls, value: int) -> int:
        if value != -1 and value <= 0:
            raise ValueError(f"expected {EXPECTED['max_steps']}")
        return value

    @field_validator("lr_scheduler_type")
    @classmethod
    def _check_scheduler(cls, value: str) -> str:
        if value in KNOWN_SCHEDULERS:
            return value
        from transformers import SchedulerType  # lazy: only for a value not in the fast-path set

        allowed = [member.value for member in SchedulerType]
        if value not in allowed:
            raise ValueError(one_of(allowed, value))
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
        names = training_argument_names()
        problems, checked = [], {}
        for key, item in value.items():
            if key not in names or key in Config.model_fields:
                problems.append(f"{key}: not a TrainingArguments field that prefkit passes through")
                continue
            checked[key], problem = validate_training_argument(key, item)
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
        # scales a length-normalised reward (beta 0.1 there gives almost no gradient signal). SimPO gets
        # the seed guide's LLaMA-Factory SimPO template instead: beta 2.0, gamma 0.5 (gamma/beta 0.25;
        # the SimPO authors' base-model configs use beta 2.0 with gamma/beta 0.5-0.8, gamma 1.0-1.6).
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
            if name in RESERVED_KEYS:
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
