"""The Config fields, in groups of one concern each; :class:`prefkit.config.schema.Config` inherits them
all and adds the checks that involve several keys. Each description says what the key does and its
default, and whether it is LLaMA-Factory's key or prefkit's own."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ModelKeys(BaseModel):
    """The model to train and where it comes from."""

    model_config = ConfigDict(extra="forbid")

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


class MethodKeys(BaseModel):
    """The stage and the fine-tuning method (LoRA, full, QLoRA)."""

    model_config = ConfigDict(extra="forbid")

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
        description="Load the frozen base model quantised to 4 or 8 bits with bitsandbytes (QLoRA), on a "
        "CUDA GPU or the CPU (`pip install 'prefkit[qlora]'`). Needs `finetuning_type: lora`. Defaults to "
        "`None` (no quantisation). LLaMA-Factory key.",
    )
    quantization_type: Literal["nf4", "fp4"] = Field(
        default="nf4",
        description="The 4-bit data type: `nf4` (NormalFloat, the QLoRA paper's, for normally distributed "
        "weights) or `fp4`. Only with `quantization_bit: 4`. Defaults to `nf4`. LLaMA-Factory key.",
    )
    double_quantization: bool = Field(
        default=True,
        description="Quantise the 4-bit blocks' scales too (about 0.4 bits per weight saved). Only with "
        "`quantization_bit: 4`. Defaults to `true`. LLaMA-Factory key.",
    )


class DataKeys(BaseModel):
    """Where the examples come from and how they become tokens."""

    model_config = ConfigDict(extra="forbid")

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
    batch_layout: Literal["auto", "padded", "shared_prompt", "packed"] = Field(
        default="auto",
        description="How preference pairs are laid out in a batch; every layout gives the same log-probs. "
        "`padded`: prompt + chosen and prompt + rejected as two right-padded rows (TRL's layout). "
        "`shared_prompt`: one row per pair, prompt + chosen + rejected, the prompt computed once. "
        "`packed`: shared prompts, and several pairs in a row up to `pack_length` tokens, so almost no "
        "compute goes to padding. `auto` is `packed` where the model's attention takes a ready-made mask "
        "(sdpa, eager) and no sliding window is shorter than a row, else `padded`. Defaults to `auto`. "
        "prefkit key.",
    )
    pack_length: int | None = Field(
        default=None,
        gt=0,
        description="Most tokens in one packed row (`batch_layout: packed`), unless one pair is longer: the "
        "batch is then as wide as that pair, and rows may fill that width. Defaults to `None`, which means "
        "`2 * cutoff_len`. prefkit key.",
    )


class LossKeys(BaseModel):
    """The preference loss and its settings."""

    model_config = ConfigDict(extra="forbid")

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
        "which means the method default: `2.0` for `simpo` (the seed guide's LLaMA-Factory SimPO template), "
        "`0.1` for every other loss (LLaMA-Factory's default). LLaMA-Factory key.",
    )
    simpo_gamma: float | None = Field(
        default=None,
        ge=0.0,
        description="SimPO's target reward margin. Only used with `pref_loss: simpo`. Defaults to `None`, "
        "which means `0.5` for `simpo` (LLaMA-Factory's default and the seed guide's; with beta 2.0 that is "
        "gamma/beta 0.25, where the SimPO authors' base-model configs use 0.5-0.8, gamma 1.0-1.6). "
        "LLaMA-Factory key.",
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
    disable_dropout: bool = Field(
        default=True,
        description="Turn off the model's dropout in preference stages, as TRL does: with dropout the "
        "policy's log-probs, rewards and loss are noisy samples (GPT-2-family models ship with dropout 0.1). "
        "`lora_dropout` is kept as set; the reference pass never uses dropout. Defaults to `True`. TRL key.",
    )
    reference_cache: bool = Field(
        default=True,
        description="Keep the reference model's log-probs of each pair on disk (`<cache_dir>/reference/`, "
        "keyed by the reference weights, the pair's tokens and the precision) and read them instead of "
        "running the reference again: in later epochs, resumed runs, sweeps and reruns. Defaults to `True`. "
        "prefkit key.",
    )
    precompute_ref_log_probs: bool = Field(
        default=False,
        description="Compute every pair's reference log-probs before training starts (otherwise each is "
        "computed the first time its batch is seen). With full fine-tuning and `reference_cache`, this is "
        "always done, so the frozen reference copy is freed before training (or never loaded, when the "
        "cache is warm). Defaults to `False`. TRL key.",
    )


class TrainingKeys(BaseModel):
    """The optimisation, logging, saving and evaluation schedule."""

    model_config = ConfigDict(extra="forbid")

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
    eval_generate: int = Field(
        default=0,
        ge=0,
        description="At each evaluation, also generate replies to the first N prompts of the eval split, "
        "score them (ROUGE-L, BLEU, relevance, closer-to-chosen, length, repetition and `eval_scorers`) and "
        "log each metric's mean as `eval_<metric>`, with a table of replies as `eval_samples`; "
        "`metric_for_best_model` may name any of them. Defaults to `0` (no generation). prefkit key.",
    )
    eval_scorers: list[str] = Field(
        default_factory=list,
        description="Scorers to run on the `eval_generate` replies besides the general ones: builtin style "
        "scorers (`socratic`) or user scorers as `module:function` or `path/to/file.py:function` (a "
        "function of one `prefkit.evaluate.Sample` returning a number). Defaults to `[]`. prefkit key.",
    )
    eval_max_new_tokens: int = Field(
        default=128,
        gt=0,
        description="Most new tokens per `eval_generate` reply (greedy decoding). Defaults to `128`. "
        "prefkit key.",
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
    max_nonfinite_steps: int = Field(
        default=3,
        gt=0,
        description="An optimiser step whose loss or gradient is NaN or infinite is skipped (the weights and "
        "optimiser state stay as they were) and logged with its examples; after this many such steps in a "
        "row training stops with an error. Defaults to `3`. prefkit key.",
    )
