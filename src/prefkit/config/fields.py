"""The Config fields, in groups of one concern each (the training schedule's in
:mod:`prefkit.config.schedule_fields`); :class:`prefkit.config.schema.Config` inherits them all and adds the
checks that involve several keys. Each description says what the key does and its
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
