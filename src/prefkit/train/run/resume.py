"""Resuming a run: is this checkpoint one the current config can continue?

A resumed run must be the run that was started: a changed learning rate, loss, LoRA rank or data
would give a model that neither config describes, and a changed LoRA shape cannot even load the
checkpoint. So before any model is loaded the current config is compared with the one the run saved
(``training_config.json``) and with the checkpoint's own ``adapter_config.json``:

* keys that change the result (anything not listed below) must be equal -- otherwise an error with
  the differences, one ``key: saved -> now`` line each;
* keys that only change what is logged, saved or evaluated (:data:`NEUTRAL_KEYS`) may differ;
* ``max_steps`` and ``num_train_epochs`` may grow (train longer), not shrink.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from prefkit.config.passthrough import current_argument_names
from prefkit.errors import PrefkitError

logger = logging.getLogger(__name__)

TRAINING_CONFIG = "training_config.json"

# Keys whose value does not change the trained model (what is logged, saved, evaluated, or where).
NEUTRAL_KEYS = frozenset(
    {
        "output_dir",
        "overwrite_output_dir",
        "resume_from_checkpoint",
        "cache_dir",
        "logging_steps",
        "logging_strategy",
        "logging_first_step",
        "logging_dir",
        "log_level",
        "log_level_replica",
        "log_on_each_node",
        "disable_tqdm",
        "report_to",
        "run_name",
        "plot_loss",
        "save_steps",
        "save_strategy",
        "save_total_limit",
        "save_only_model",
        "save_on_each_node",
        "eval_strategy",
        "eval_steps",
        "eval_delay",
        "eval_on_start",
        "eval_accumulation_steps",
        "per_device_eval_batch_size",
        "max_eval_samples",
        "load_best_model_at_end",
        "metric_for_best_model",
        "greater_is_better",
        "dataloader_num_workers",
        "dataloader_pin_memory",
        "dataloader_persistent_workers",
        "dataloader_prefetch_factor",
        "max_nonfinite_steps",  # when to give up on non-finite steps, not what a finite step does
    }
)
GROWABLE_KEYS = ("max_steps", "num_train_epochs")  # training for longer continues the same run
# Keys holding a path: `data/x.jsonl` and `/home/me/data/x.jsonl` naming one file are no change.
PATH_KEYS = frozenset(
    {"model_name_or_path", "adapter_name_or_path", "train_file", "eval_file", "dataset_dir"}
)


class ResumeError(PrefkitError):
    """The checkpoint cannot be continued with this config."""


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ResumeError(f"{path}: cannot read {what}: {str(exc)[:200]}") from None


def checkpoint_step(checkpoint: Path) -> int:
    """The global step a checkpoint was saved at, from its trainer_state.json (whatever its name)."""
    state = _read_json(checkpoint / "trainer_state.json", "the checkpoint's trainer state")
    step = state.get("global_step") if isinstance(state, dict) else None
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ResumeError(
            f"{checkpoint / 'trainer_state.json'}: no valid global_step in it; is {checkpoint} a "
            "checkpoint written by transformers' Trainer?"
        )
    return step


# What a checkpoint holds besides the model files save_model writes: the state to go on training.
TRAINING_STATE = ("optimizer.pt", "scheduler.pt", "scaler.pt", "trainer_state.json", "rng_state")


def trainer_state(checkpoint: Path) -> dict[str, Any]:
    state = _read_json(checkpoint / "trainer_state.json", "the checkpoint's trainer state")
    if not isinstance(state, dict):
        raise ResumeError(f"{checkpoint / 'trainer_state.json'}: expected a JSON object")
    return state


def training_complete(checkpoint: Path, max_steps: int, changed: list[str]) -> bool:
    """Whether the checkpoint was saved at the run's last step (the run was stopped after training,
    before its final model was in place). transformers, resumed from such a checkpoint, would train one
    step too many; prefkit finishes from the checkpoint instead."""
    state = trainer_state(checkpoint)
    step, planned = state.get("global_step"), state.get("max_steps")
    if max_steps > 0:
        return isinstance(step, int) and step >= max_steps
    epochs_grew = any(line.startswith("num_train_epochs:") for line in changed)
    return isinstance(step, int) and isinstance(planned, int) and step >= planned and not epochs_grew


def final_model_source(checkpoint: Path, load_best: bool) -> Path:
    """The checkpoint whose model is the run's final model: the last one, or the best one when
    load_best_model_at_end asked for it (as transformers would have loaded it)."""
    best = trainer_state(checkpoint).get("best_model_checkpoint") if load_best else None
    if isinstance(best, str) and (checkpoint.parent / Path(best).name / "trainer_state.json").is_file():
        return checkpoint.parent / Path(best).name
    return checkpoint


def model_files(checkpoint: Path) -> list[Path]:
    """The files of a checkpoint that save_model writes (what a final model folder holds)."""
    return sorted(p for p in checkpoint.iterdir() if not p.name.startswith(TRAINING_STATE))


def _grew(key: str, saved: Any, now: Any) -> bool:
    if key == "max_steps":
        return isinstance(saved, int) and isinstance(now, int) and 0 < saved <= now
    return isinstance(saved, int | float) and isinstance(now, int | float) and saved <= now


def config_changes(
    saved: dict[str, Any], now: dict[str, Any], defaults: dict[str, Any]
) -> tuple[list[str], list[str]]:
    """(changes that alter the result, changes that do not), each as ``key: saved -> now``.

    A key the saved config lacks (a setting added to prefkit since) counts as its default. A TrainingArguments
    name and its deprecated alias are one setting, whichever each run spelled."""
    saved, now = current_argument_names(saved), current_argument_names(now)
    blocking, allowed = [], []
    for key in sorted(set(saved) | set(now)):
        missing = object()
        old = saved.get(key, defaults.get(key, missing))
        new = now.get(key, defaults.get(key, missing))
        if old == new or (key in PATH_KEYS and _same_path(old, new)):
            continue
        line = f"{key}: {_shown(old)} -> {_shown(new)}"
        if key in NEUTRAL_KEYS or (key in GROWABLE_KEYS and _grew(key, old, new)):
            allowed.append(line)
        else:
            blocking.append(line)
    return blocking, allowed


def _same_path(a: Any, b: Any) -> bool:
    if not (isinstance(a, str) and isinstance(b, str)):
        return False
    try:
        return Path(a).exists() and Path(a).resolve() == Path(b).resolve()
    except (OSError, RuntimeError):
        return False


def _shown(value: Any) -> str:
    if not isinstance(value, str | int | float | bool | list | dict | type(None)):
        return "(not set)"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:76] + " ..."


def check_resume(
    checkpoint: Path, now: dict[str, Any], defaults: dict[str, Any], run_dir: Path
) -> tuple[int, list[str]]:
    """(the checkpoint's step, the neutral changes) -- or a ResumeError with every change that would
    alter the result, and any mismatch with the checkpoint's adapter."""
    step = checkpoint_step(checkpoint)
    record_path = run_dir / TRAINING_CONFIG
    allowed: list[str] = []
    if record_path.is_file():
        record = _read_json(record_path, "the run's saved config")
        saved = record.get("config") if isinstance(record, dict) else None
        if not isinstance(saved, dict):
            raise ResumeError(f"{record_path}: no 'config' object in it: cannot check the resumed config")
        blocking, allowed = config_changes(saved, now, defaults)
        if blocking:
            raise ResumeError(
                f"cannot resume {checkpoint}: the config differs from the one the run started with "
                f"({record_path}) in settings that change the result:\n"
                + "\n".join(f"  {line}" for line in blocking)
                + "\nRestore them to continue the run, or start a new one (another output_dir, or "
                "overwrite_output_dir: true to replace this run)."
            )
    else:
        logger.warning("%s has no %s: the resumed config cannot be compared", run_dir, TRAINING_CONFIG)
    _check_adapter(checkpoint, now)
    return step, allowed


def _check_adapter(checkpoint: Path, now: dict[str, Any]) -> None:
    """The checkpoint's model must be what this config trains (LoRA of this rank, or full)."""
    adapter = checkpoint / "adapter_config.json"
    lora = now.get("finetuning_type", "lora") == "lora"
    if adapter.is_file() != lora:
        saved_kind = "a LoRA adapter" if adapter.is_file() else "a full model"
        raise ResumeError(
            f"cannot resume {checkpoint}: it holds {saved_kind}, but finetuning_type is "
            f"{now.get('finetuning_type')}"
        )
    if not lora or now.get("adapter_name_or_path"):  # a continued adapter keeps its own rank
        return
    saved = _read_json(adapter, "the checkpoint's adapter config")
    rank = saved.get("r") if isinstance(saved, dict) else None
    if rank != now.get("lora_rank"):
        raise ResumeError(
            f"cannot resume {checkpoint}: its adapter has lora_rank {rank} ({adapter}), the config asks "
            f"for {now.get('lora_rank')}; the weights cannot be loaded into another shape"
        )
