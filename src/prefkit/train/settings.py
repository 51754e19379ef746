"""What a run is set up with, as transformers and the run folder hold it: the ``TrainingArguments`` built
from a Config (the user's own TrainingArguments fields winning), and ``training_config.json``, every
resolved setting grouped like the seed notebook's export, with a line of history per resume."""

from __future__ import annotations

import copy
import json
import logging
from typing import TYPE_CHECKING, Any

import prefkit
from prefkit.errors import PrefkitError
from prefkit.model.quantization import Quantization
from prefkit.model.training import trainable_parameters, trains_on_gpu
from prefkit.train.distributed import is_first_process
from prefkit.train.fusion import Fusion, accumulation_fusion
from prefkit.train.run.folder import RunFolder, write_json_atomic
from prefkit.train.run.resume import TRAINING_CONFIG
from prefkit.train.run.start import StartPlan

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from transformers import TrainingArguments

    from prefkit.config import Config


def training_arguments(config: Config, fusion: Fusion | None = None) -> TrainingArguments:
    """``config``'s TrainingArguments, its batches those of ``fusion`` (default: as ``config`` alone fuses its
    accumulation window, every sequence counted ``cutoff_len``; training passes the data's own)."""
    import torch

    from prefkit.config.passthrough import current_argument_names
    from prefkit.env import bf16_supported, cpu_bf16_fast
    from prefkit.train.trainer import PrefTrainingArguments

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
    # Measured on the first process only (cached): every rank of a CPU run timing matmuls at once on the
    # same cores would measure each other.
    bf16_on_cpu = config.bf16 and not trains_on_gpu(config)
    if bf16_on_cpu and is_first_process() and not cpu_bf16_fast(config.cache_dir):
        logger.warning(
            "bf16: true, but this CPU computes bf16 matmuls slower than fp32 ones (`prefkit env`; "
            "docs/performance.md#choosing-the-precision): bf16: false trains faster here, at more memory"
        )
    # The user's own `warmup_steps` (a count, or a ratio below 1) wins; else warmup_ratio, turned into a
    # number of steps once the trainer knows how many there are (see PrefTrainingArguments).
    warmup_ratio = None if "warmup_steps" in config.training_arguments else config.warmup_ratio
    fusion = fusion or accumulation_fusion(config)  # the Trainer's batches: the accumulation window, fused
    kwargs: dict[str, Any] = {
        "output_dir": config.output_dir,
        "do_train": config.do_train,
        "per_device_train_batch_size": fusion.batch,
        "per_device_eval_batch_size": config.per_device_eval_batch_size,
        "gradient_accumulation_steps": fusion.steps,
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
        # TrainingArguments fields the user set by name win. A copy: TrainingArguments rewrites a dict
        # `fsdp_config` in place (`fsdp_` prefixes dropped, defaults added), which would record the config
        # changed and refuse to resume the run for it.
        **copy.deepcopy(current_argument_names(config.training_arguments)),
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
    quantization = Quantization.of(config)
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
            "quantization": {**quantization.identity(), "method": "bitsandbytes"} if quantization else None,
            "parameters": {"trainable": trainable, "total": total},
            "data": {
                "train_examples": len(prepared.train),
                "eval_examples": len(prepared.eval or []),
                "skipped": [str(p) for p in prepared.skipped],
            },
            "training_args": args.to_dict(),
        }
    )


def record_config(
    folder: RunFolder, record: dict[str, Any], plan: StartPlan, step: int | None, changed: list[str]
) -> None:
    """training_config.json: the run's settings; a resume adds a line of history instead of erasing the
    settings the run started with from view."""
    path = folder.claim_name(TRAINING_CONFIG)
    history: list[Any] = []
    if plan.action == "resume" and path.is_file():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
            history = list(previous.get("resumed", [])) if isinstance(previous, dict) else []
        except (OSError, ValueError):
            history = []
    if plan.resume_from is not None:
        history.append({"from": str(plan.resume_from), "step": step, "changed": changed})
    write_json_atomic(path, {**record, "resumed": history} if history else record)
