"""Prepared data shared by the runs of one process (a sweep's runs, one after another).

Inside ``with shared_preparation():`` :func:`prefkit.data.load.prepare_data` reads, checks and tokenises
each distinct data setup once and hands later runs the same :class:`PreparedData`. Two runs share it when
everything prepare_data could depend on is equal: the config's values except the keys listed in
:data:`NOT_DATA_KEYS` (learning rate, loss, LoRA shape, ... -- keys data preparation never reads), the
tokenizer, and the size and modification time of every data file. A key not in that list (a new one, a
TrainingArguments field) counts as data, so an unknown key can only cost a missed share, never a wrong one.
Outside the block nothing is kept.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefkit.data.sources import sources

if TYPE_CHECKING:
    from prefkit.config import Config

logger = logging.getLogger(__name__)

# Config keys data preparation never reads: runs differing only in these share their prepared data.
NOT_DATA_KEYS = frozenset(
    {
        "adapter_name_or_path",
        "do_train",
        "finetuning_type",
        "lora_rank",
        "lora_alpha",
        "lora_dropout",
        "lora_target",
        "quantization_bit",
        "quantization_type",
        "double_quantization",
        "batch_layout",
        "pack_length",
        "pref_loss",
        "pref_beta",
        "simpo_gamma",
        "pref_ftx",
        "dpo_label_smoothing",
        "disable_dropout",
        "reference_cache",
        "precompute_ref_log_probs",
        "output_dir",
        "overwrite_output_dir",
        "resume_from_checkpoint",
        "per_device_train_batch_size",
        "per_device_eval_batch_size",
        "gradient_accumulation_steps",
        "learning_rate",
        "lr_scheduler_type",
        "warmup_ratio",
        "num_train_epochs",
        "max_steps",
        "bf16",
        "fp16",
        "max_grad_norm",
        "logging_steps",
        "save_steps",
        "save_total_limit",
        "eval_strategy",
        "eval_steps",
        "eval_generate",
        "eval_scorers",
        "eval_max_new_tokens",
        "plot_loss",
        "report_to",
        "max_nonfinite_steps",
        # TrainingArguments fields commonly swept or set beside them
        "weight_decay",
        "optim",
        "warmup_steps",
        "adam_beta1",
        "adam_beta2",
        "adam_epsilon",
        "gradient_checkpointing",
        "gradient_checkpointing_kwargs",
        "activation_checkpointing",
        "activation_checkpointing_kwargs",
        "dataloader_num_workers",
        "metric_for_best_model",
        "greater_is_better",
        "load_best_model_at_end",
        "save_strategy",
        "logging_strategy",
    }
)


@dataclass
class SharedPreparation:
    """What one ``shared_preparation`` block kept, and how often it was reused."""

    prepared: dict[str, Any] = field(default_factory=dict)
    reused: int = 0

    @property
    def computed(self) -> int:
        return len(self.prepared)


_active: SharedPreparation | None = None


@contextlib.contextmanager
def shared_preparation() -> Iterator[SharedPreparation]:
    """Share prepared data between the runs started inside the block (nested blocks share the outer's)."""
    global _active
    outer = _active
    if outer is not None:
        yield outer
        return
    _active = SharedPreparation()
    try:
        yield _active
    finally:
        _active = None


def _file_state(path: Path) -> list[Any]:
    try:
        stat = path.stat()
    except OSError:
        return [str(path), None]
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


def _tokenizer_identity(tokenizer: Any) -> list[Any]:
    template = getattr(tokenizer, "chat_template", None)
    return [
        type(tokenizer).__name__,
        getattr(tokenizer, "name_or_path", None),
        len(tokenizer),
        hashlib.sha256(str(template).encode()).hexdigest(),
        str(getattr(tokenizer, "special_tokens_map", {})),
    ]


def preparation_key(config: Config, tokenizer: Any) -> str:
    """A digest of everything :func:`prefkit.data.load.prepare_data` may depend on."""

    values = {k: v for k, v in config.resolved().items() if k not in NOT_DATA_KEYS}
    files = [_file_state(s.path) for split in ("train", "eval") for s in sources(config, split)]
    if config.dataset_dir:
        files.append(_file_state(Path(config.dataset_dir) / "dataset_info.json"))
    identity = {"config": values, "tokenizer": _tokenizer_identity(tokenizer), "files": files}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def shareable(prepare: Callable[[Config, Any], Any]) -> Callable[[Config, Any], Any]:
    """Decorates prepare_data: inside a ``shared_preparation`` block, one preparation per distinct key."""

    @functools.wraps(prepare)
    def prepare_once(config: Config, tokenizer: Any) -> Any:
        shared = _active
        if shared is None:
            return prepare(config, tokenizer)
        key = preparation_key(config, tokenizer)
        if key in shared.prepared:
            shared.reused += 1
            logger.info(
                "data: reusing the data prepared for an earlier run (same files, tokenizer, settings)"
            )
            return shared.prepared[key]
        prepared = prepare(config, tokenizer)
        shared.prepared[key] = prepared
        return prepared

    return prepare_once
