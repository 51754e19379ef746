"""Pre-flight: what can be known to fail before the model is loaded is refused before it is loaded.

A run that dies an hour in -- the disk full at the first checkpoint, the output folder read-only at the
end, a 7B model on a 16 GiB laptop -- costs the hour. Each check here reads only files (the model's
``config.json`` and ``tokenizer_config.json``) and asks the OS (free disk, memory), and raises a
:class:`PreflightError` naming the setting and what it would need:

* the output folder can be created and written;
* a checkpoint and the final model fit on its disk (estimated from the parameter count);
* the model fits in the device's memory (estimated from ``config.json``, no weights read);
* 4/8-bit quantisation has a CUDA GPU;
* there is a chat template (the tokenizer's, or ``template:``);
* ``lora_rank`` is not larger than the model's hidden size;
* ``fsdp`` has several processes to shard over, saves whole state dicts and, on CPU processes, is FSDP2.

The estimates are deliberately rough (activations are left out); they refuse only what cannot work.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefkit.errors import PrefkitError

if TYPE_CHECKING:
    from prefkit.config import Config

logger = logging.getLogger(__name__)

GIB = 2**30
# Models whose MLP is two matrices (up, down); the rest (Llama, Qwen, Mistral, Gemma, ...) gate it with a
# third.
_TWO_MATRIX_MLP = {"gpt2", "gpt_neo", "gptj", "gpt_neox", "opt", "bloom", "falcon", "phi", "codegen"}


class PreflightError(PrefkitError):
    """The run would fail later for a reason that is already known."""


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def _origin(config: Config, key: str) -> str:
    return config.sources().get(key, "config")


# ----------------------------------------------------------------------------------- output folder


def existing_ancestor(path: Path) -> Path:
    """``path`` or the nearest folder above it that exists (where it would be created)."""
    current = path.absolute()
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


WRITE_PROBE_PREFIX = ".prefkit-write-test-"


def check_writable(output_dir: Path) -> None:
    """The folder (or, if it does not exist yet, the folder it will be made in) takes a new file.
    Tried for real with a temporary file: permission bits do not tell the whole story (root, ACLs,
    read-only mounts)."""
    where = existing_ancestor(output_dir)
    if not where.is_dir():
        raise PreflightError(
            f"output_dir {output_dir}: {where} is not a folder, so output_dir cannot be made in it"
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=WRITE_PROBE_PREFIX, dir=where)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise PreflightError(
            f"output_dir {output_dir}: cannot write in {where} ({exc.strerror or exc}); choose a folder "
            "you can write to"
        ) from None


def check_disk(output_dir: Path, need: int, what: str) -> None:
    free = shutil.disk_usage(existing_ancestor(output_dir)).free
    if free < need:
        raise PreflightError(
            f"output_dir {output_dir}: {_gib(free)} free on its disk, but {what} needs about {_gib(need)}; "
            "free some space or choose a folder on another disk"
        )


# ------------------------------------------------------------------------------------- model size


@dataclass(frozen=True)
class ModelSize:
    """Parameter counts estimated from a model's config.json (no weights read)."""

    total: int
    hidden: int
    lora_per_rank: int  # LoRA parameters per unit of rank with every linear layer targeted

    def lora(self, rank: int) -> int:
        return self.lora_per_rank * rank


def _get(cfg: dict[str, Any], *names: str) -> Any:
    for name in names:
        value = cfg.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def estimate_size(cfg: dict[str, Any]) -> ModelSize | None:
    """From ``config.json``: embeddings, attention and MLP of a decoder-only transformer. None when the
    config does not say enough (an architecture this does not know)."""
    if isinstance(cfg.get("text_config"), dict) and not _get(cfg, "hidden_size", "n_embd", "d_model"):
        cfg = cfg["text_config"]  # a vision-language model: its language model is what is trained
    hidden = _get(cfg, "hidden_size", "n_embd", "d_model")
    layers = _get(cfg, "num_hidden_layers", "n_layer", "num_layers")
    vocab = _get(cfg, "vocab_size")
    if not (hidden and layers and vocab):
        return None
    heads = _get(cfg, "num_attention_heads", "n_head") or max(hidden // 64, 1)
    kv_heads = _get(cfg, "num_key_value_heads") or heads
    head_dim = _get(cfg, "head_dim") or hidden // heads
    inter = _get(cfg, "intermediate_size", "n_inner", "ffn_dim") or 4 * hidden
    experts = _get(cfg, "num_local_experts", "num_experts", "n_routed_experts") or 1
    mlp_mats = 2 if cfg.get("model_type") in _TWO_MATRIX_MLP else 3
    q, kv = heads * head_dim, kv_heads * head_dim
    attention = hidden * q + 2 * hidden * kv + q * hidden
    mlp = mlp_mats * hidden * inter * experts
    embeddings = vocab * hidden * (1 if cfg.get("tie_word_embeddings", True) else 2)
    total = embeddings + layers * (attention + mlp)
    lora_attention = (hidden + q) + 2 * (hidden + kv) + (q + hidden)
    lora_mlp = mlp_mats * (hidden + inter) * experts
    return ModelSize(total, hidden, layers * (lora_attention + lora_mlp))


def read_json_file(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _training_bytes(config: Config, size: ModelSize, needs_reference: bool) -> int:
    """Weights, gradients and Adam states (activations aside) for LoRA or full fine-tuning."""
    if config.finetuning_type == "full":
        # fp32 master weights, their gradients, Adam's two moments; plus the frozen reference copy.
        return size.total * 16 + (size.total * 4 if needs_reference else 0)
    per_param = {4: 0.55, 8: 1.1}.get(config.quantization_bit or 0) or (
        2 if config.bf16 or config.fp16 else 4
    )
    return int(size.total * per_param) + size.lora(config.lora_rank) * 16


def _device_memory() -> tuple[str, int, int | None]:
    """(device words, total bytes, available bytes or None) of the device training runs on."""
    import psutil
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return f"the GPU ({props.name})", props.total_memory, None
    memory = psutil.virtual_memory()
    return "this machine's memory", memory.total, memory.available


def check_memory(config: Config, size: ModelSize, needs_reference: bool, model: str) -> None:
    need = _training_bytes(config, size, needs_reference)
    device, total, available = _device_memory()
    how = "full fine-tuning" if config.finetuning_type == "full" else "LoRA"
    if need > total:
        raise PreflightError(
            f"model {model}: about {size.total / 1e9:.2f}B parameters; {how} needs about {_gib(need)} for "
            f"weights, gradients and optimizer state alone, and {device} has {_gib(total)}. Use a smaller "
            "model, LoRA instead of full fine-tuning, bf16: true, or quantization_bit: 4 on a GPU"
        )
    if available is not None and need > available:
        logger.warning(
            "model %s needs about %s to train and %s has %s free now: training may swap or be killed",
            model,
            _gib(need),
            device,
            _gib(available),
        )


def check_checkpoint_disk(config: Config, size: ModelSize) -> None:
    """One checkpoint (model + Adam states) and the final model must fit; all of them, or a warning."""
    trained = size.total if config.finetuning_type == "full" else size.lora(config.lora_rank)
    checkpoint, final = trained * 12, trained * 4  # fp32 weights and Adam's two moments; fp32 weights
    check_disk(Path(config.output_dir), checkpoint + final, "a checkpoint and the final model")
    if config.max_steps > 0:
        saves = -(-config.max_steps // config.save_steps)
        kept = min(saves, config.save_total_limit or saves)
        need = kept * checkpoint + final
        free = shutil.disk_usage(existing_ancestor(Path(config.output_dir))).free
        if free < need:
            logger.warning(
                "%d checkpoints and the final model need about %s and %s is free: set save_total_limit",
                kept,
                _gib(need),
                _gib(free),
            )


# --------------------------------------------------------------------------------- configuration


def check_quantization(config: Config) -> None:
    """Quantise one small layer the way the run will, on the device it will train on: a machine where
    bitsandbytes is missing or cannot run gets one line here, before the model is loaded."""
    import torch

    from prefkit.model.loader import run_dtype
    from prefkit.model.quantization import Quantization, QuantizationError, check_runs
    from prefkit.model.training import trains_on_gpu

    quantization = Quantization.of(config)
    for key in ("quantization_type", "double_quantization"):
        if key in config.model_fields_set and (quantization is None or quantization.bits != 4):
            # A LLaMA-Factory config may carry them unused: said, not refused.
            logger.warning("%s: %s applies to 4-bit quantisation only; ignored", _origin(config, key), key)
    if quantization is None:
        return
    device = torch.device("cuda") if trains_on_gpu(config) else torch.device("cpu")
    try:
        check_runs(quantization, device, run_dtype(config.bf16, config.fp16))
    except QuantizationError as err:
        raise PreflightError(f"{_origin(config, 'quantization_bit')}: {err}") from err


def has_chat_template(model_dir: Path) -> bool:
    if (model_dir / "chat_template.jinja").is_file() or (model_dir / "chat_template.json").is_file():
        return True
    tokenizer_config = read_json_file(model_dir / "tokenizer_config.json") or {}
    return bool(tokenizer_config.get("chat_template"))


def check_template(config: Config, model_dir: Path) -> None:
    from prefkit.data.templates import TEMPLATES, resolve_template

    if resolve_template(config.template) is not None or not model_dir.is_dir():
        return  # a named template (unknown names raise above), or a hub id: the tokenizer will tell
    if not has_chat_template(model_dir):
        raise PreflightError(
            f"model {model_dir} has no chat template (none in tokenizer_config.json, no "
            f"chat_template.jinja) and `template:` is not set: set it to one of {', '.join(TEMPLATES)}"
        )


def check_lora_rank(config: Config, size: ModelSize, model: str) -> None:
    if (
        config.finetuning_type == "lora"
        and not config.adapter_name_or_path
        and config.lora_rank > size.hidden
    ):
        raise PreflightError(
            f"{_origin(config, 'lora_rank')}: lora_rank: got {config.lora_rank} -- expected at most the "
            f"hidden size of {model} ({size.hidden}): a LoRA update of a layer can have no higher rank "
            "than the layer's smaller side, so a larger rank only costs memory"
        )


def check_fsdp(config: Config) -> None:
    """`fsdp` with one process, a `state_dict_type` that saves no final model, FSDP1 on CPU processes:
    refused here, not by a traceback from inside the Trainer once the model is loaded (or trained)."""
    from prefkit.model.training import trains_on_gpu
    from prefkit.train.distributed import world_size
    from prefkit.train.sharding import fsdp_problem

    if (problem := fsdp_problem(config, world_size(), trains_on_gpu(config))) is not None:
        key, sentence = problem
        raise PreflightError(f"{_origin(config, key)}: {sentence}")


def preflight(config: Config, model: str, needs_reference: bool) -> None:
    """Every check that the resolved ``model`` (a local folder or a hub id) allows, before loading it."""
    check_writable(Path(config.output_dir))
    check_fsdp(config)
    check_quantization(config)
    model_dir = Path(model)
    check_template(config, model_dir)
    cfg = read_json_file(model_dir / "config.json") if model_dir.is_dir() else None
    size = estimate_size(cfg) if cfg else None
    if size is None:
        logger.debug("no size estimate for %s: memory and disk checks skipped", model)
        return
    check_lora_rank(config, size, model)
    check_memory(config, size, needs_reference, model)
    check_checkpoint_disk(config, size)
