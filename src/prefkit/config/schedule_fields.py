"""The Config fields of the training schedule -- optimisation, logging, saving, evaluation -- beside the
model, method, data and loss groups of :mod:`prefkit.config.fields`. Each description says what the key
does and its default, and whether it is LLaMA-Factory's key or prefkit's own."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


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
    fuse_accumulation_tokens: int | None = Field(
        default=None,
        ge=0,
        description="Train the gradient-accumulation window in fewer, larger batches: "
        "`per_device_train_batch_size` x `gradient_accumulation_steps` examples as batches of up to this "
        "many tokens at their longest (each sequence as long as the data's longest row, at most "
        "`cutoff_len`; two per pair), giving the same gradient "
        "and the same logged metrics as the configured micro-batches, faster. `0` turns it off (each "
        "micro-batch its own forward, as transformers does). Defaults to `None`: 1536 when training on "
        "the CPU (fusing helps small micro-batches; larger ones are efficient as they are), off on a GPU, "
        "where a batch of 1 is often what fits (set it to fuse there). prefkit key.",
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
