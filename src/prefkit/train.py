"""`prefkit train`: one function from a Config to a finished output folder.

    config -> output folder rules -> model (+ reference) -> data -> PrefTrainer -> save -> plots

What a finished run leaves in ``output_dir``: the adapter (or full model) and tokenizer, loadable with
``PeftModel.from_pretrained`` / ``AutoModelForCausalLM.from_pretrained``; ``training_config.json``;
``metrics.jsonl``; ``loss.png`` (+ ``rewards.png`` for preference stages); ``checkpoint-N/`` folders;
and last, ``prefkit_run.json`` with ``"status": "finished"``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import prefkit
from prefkit.callbacks import METRICS_FILE, MetricsJsonl, plot_run, read_metrics, truncate_metrics
from prefkit.data.collate import PreferenceCollator, SFTCollator
from prefkit.data.load import prepare_data
from prefkit.distributed import mislaunch_warning
from prefkit.env import cache_dir
from prefkit.errors import PrefkitError
from prefkit.evaluate.training import generation_eval_for
from prefkit.losses import LOSSES, LossParams
from prefkit.models import load_for_training, resolve_first, trainable_parameters
from prefkit.runs import RUN_FILE, clear_run, plan_start, write_json_atomic

if TYPE_CHECKING:
    from transformers import TrainerCallback, TrainingArguments

    from prefkit.config import Config

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    output_dir: Path
    global_step: int
    metrics: list[dict[str, Any]]
    resumed_from: Path | None
    train_seconds: float


def model_path(config: Config) -> str:
    """The model folder (or hub id) to train: the first of ``model_name_or_path``'s candidates that loads,
    builtin aliases and .gguf files converted once into the cache."""
    if not config.model_name_or_path:
        raise PrefkitError(
            "model_name_or_path is not set: name a builtin model (smollm2-135m-instruct), a "
            "local model folder, a .gguf file or a hub id"
        )
    return resolve_first(config.model_name_or_path, cache_dir(config.cache_dir))


def training_arguments(config: Config) -> TrainingArguments:
    import torch

    from prefkit.env import bf16_supported
    from prefkit.trainer import PrefTrainingArguments

    if config.fp16 and not torch.cuda.is_available():
        raise PrefkitError(
            "fp16: true needs a CUDA GPU; on a CPU use bf16: true (where `prefkit env` says bf16: yes)"
        )
    if config.bf16 and not bf16_supported():
        device = "GPU" if torch.cuda.is_available() else "CPU"
        raise PrefkitError(
            f"bf16: true, but this {device} has no bfloat16 support (`prefkit env` says bf16: no): set bf16: "
            "false" + (" or fp16: true" if torch.cuda.is_available() else "")
        )
    # The user's own `warmup_steps` (a count, or a ratio below 1) wins; else warmup_ratio, turned into a
    # number of steps once the trainer knows how many there are (see PrefTrainingArguments).
    warmup_ratio = None if "warmup_steps" in config.training_arguments else config.warmup_ratio
    kwargs: dict[str, Any] = {
        "output_dir": config.output_dir,
        "do_train": config.do_train,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "per_device_eval_batch_size": config.per_device_eval_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "learning_rate": config.learning_rate,
        "lr_scheduler_type": config.lr_scheduler_type,
        "warmup_ratio": warmup_ratio,
        "max_nonfinite_steps": config.max_nonfinite_steps,
        "num_train_epochs": config.num_train_epochs,
        "max_steps": config.max_steps,
        "bf16": config.bf16,
        "fp16": config.fp16,
        "max_grad_norm": config.max_grad_norm,
        "logging_steps": config.logging_steps,
        "save_steps": config.save_steps,
        "save_total_limit": config.save_total_limit,
        "eval_strategy": config.eval_strategy,
        "eval_steps": config.eval_steps if config.eval_strategy == "steps" else None,
        "report_to": config.report_to,
        "seed": config.seed,
        "remove_unused_columns": False,  # our features are not the model's forward arguments
        "use_cpu": not torch.cuda.is_available(),
        **config.training_arguments,  # TrainingArguments fields the user set by name win
    }
    try:
        return PrefTrainingArguments(**kwargs)
    except (ValueError, ImportError, OSError) as err:  # e.g. deepspeed not installed, inconsistent strategies
        raise PrefkitError(f"transformers.TrainingArguments rejected these settings: {err}") from err


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_json_safe(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def training_config_record(
    config: Config, model: str, args: TrainingArguments, loaded: Any, prepared: Any
) -> dict:
    """Every resolved setting, grouped like the seed notebook's export (model, LoRA, quantization,
    trainer)."""
    peft_config = getattr(loaded.model, "peft_config", {}).get("default")
    trainable, total = trainable_parameters(loaded.model)
    return _json_safe(
        {
            "prefkit_version": prefkit.__version__,
            "model_name": model,
            "model_name_or_path": config.model_name_or_path,
            "stage": config.stage,
            "pref_loss": config.pref_loss if config.stage == "dpo" else None,
            "config": config.resolved(),
            "lora_config": peft_config.to_dict() if peft_config is not None else None,
            "quantization": {"bits": config.quantization_bit, "method": "bitsandbytes"}
            if config.quantization_bit
            else None,
            "parameters": {"trainable": trainable, "total": total},
            "data": {
                "train_examples": len(prepared.train),
                "eval_examples": len(prepared.eval or []),
                "skipped": [str(p) for p in prepared.skipped],
            },
            "training_args": args.to_dict(),
        }
    )


def train(config: Config, *, callbacks: list[TrainerCallback] | None = None) -> TrainResult:
    from accelerate import PartialState
    from transformers import set_seed

    from prefkit.trainer import PrefTrainer

    state = PartialState()
    if (warning := mislaunch_warning()) is not None:
        logger.warning(warning)
    output_dir = Path(config.output_dir)
    # Every rank decides the same way (errors included); only the main process changes files.
    resume_from, clear = plan_start(output_dir, config.overwrite_output_dir, config.resume_from_checkpoint)

    set_seed(config.seed)  # before the adapter is created: its initial weights are part of the run
    needs_reference = config.stage == "dpo" and LOSSES[config.pref_loss].needs_reference
    model = model_path(config)
    loaded = load_for_training(config, model, needs_reference)
    prepared = prepare_data(config, loaded.tokenizer)
    generation_eval = generation_eval_for(config, loaded.tokenizer, prepared.eval_examples)
    args = training_arguments(config)
    if config.eval_strategy != "no" and prepared.eval is None:
        raise PrefkitError(
            f"eval_strategy: {config.eval_strategy} needs evaluation data: set val_size, "
            "eval_file or eval_dataset"
        )
    # Only now, with the model and data known good, touch the output folder: a run that fails its
    # checks leaves the previous one exactly as it was.
    if state.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        if clear:
            clear_run(output_dir)
        metrics_path = output_dir / METRICS_FILE
        if resume_from is None:
            metrics_path.unlink(missing_ok=True)
        else:
            step = int(resume_from.name.rsplit("-", 1)[1])
            dropped = truncate_metrics(metrics_path, step)
            logger.info(
                "resuming from %s%s",
                resume_from,
                f" (dropped {dropped} metrics records logged after it)" if dropped else "",
            )
    state.wait_for_everyone()
    trainable, total = trainable_parameters(loaded.model)
    logger.info(
        "%s training %s with %s: %d train / %d eval examples; %s of %s parameters trainable",
        config.stage,
        model,
        config.pref_loss if config.stage == "dpo" else "sft",
        len(prepared.train),
        len(prepared.eval or []),
        f"{trainable:,}",
        f"{total:,}",
    )

    pad = loaded.tokenizer.pad_token_id
    collator = PreferenceCollator(pad) if config.stage == "dpo" else SFTCollator(pad)
    params = LossParams(
        beta=config.pref_beta,
        gamma=config.simpo_gamma or 0.0,
        label_smoothing=config.dpo_label_smoothing,
        ftx=config.pref_ftx,
    )
    trainer = PrefTrainer(
        stage=config.stage,
        loaded=loaded,
        pref_loss=config.pref_loss,
        loss_params=params,
        args=args,
        train_dataset=prepared.train,
        eval_dataset=prepared.eval,
        data_collator=collator,
        callbacks=[MetricsJsonl(output_dir / METRICS_FILE), *(callbacks or [])],
        generation_eval=generation_eval,
    )
    if state.is_main_process:
        write_json_atomic(
            output_dir / "training_config.json", training_config_record(config, model, args, loaded, prepared)
        )

    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    train_seconds = time.perf_counter() - started

    trainer.save_model(str(output_dir))
    if state.is_main_process:
        if config.plot_loss:
            plot_run(output_dir, preference=config.stage == "dpo")
        write_json_atomic(
            output_dir / RUN_FILE,
            {
                "status": "finished",
                "global_step": trainer.state.global_step,
                "train_seconds": round(train_seconds, 2),
                "resumed_from": str(resume_from) if resume_from else None,
                "world_size": state.num_processes,
                "prefkit_version": prefkit.__version__,
            },
        )
    state.wait_for_everyone()
    return TrainResult(
        output_dir,
        trainer.state.global_step,
        read_metrics(output_dir / METRICS_FILE),
        resume_from,
        train_seconds,
    )
