"""Loading the model and tokenizer a run trains, with LoRA/QLoRA, and its reference policy.

The reference (for the losses that need one, see :data:`prefkit.train.losses.LOSSES`):

* LoRA: the same model with the adapter switched off -- no second copy in memory. When training
  starts from an existing adapter (``adapter_name_or_path``, e.g. SFT -> DPO), the reference is that
  adapter as it was loaded, kept as a frozen second adapter named ``reference``, so the reference is
  the SFT model, as DPO assumes, not the bare base.
* Full fine-tuning: a frozen copy of the starting model.
* Reference-free methods (orpo, simpo) load nothing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from prefkit.config.passthrough import current_argument_names
from prefkit.errors import PrefkitError
from prefkit.model.adapters import AdapterSpec, attach_adapters
from prefkit.model.loader import (
    BASE_MODEL,
    adapter_active,
    load_causal_lm,
    load_tokenizer,
    peft_wrapping,
    run_dtype,
)
from prefkit.model.lora_fast import use_lean_lora_forward
from prefkit.model.quantization import Quantization
from prefkit.model.sources import source_model_id

if TYPE_CHECKING:
    from prefkit.config import Config

logger = logging.getLogger(__name__)

TRAINED_ADAPTER = "default"  # peft's name for an adapter: what a run saves and resumes
REFERENCE_ADAPTER = "reference"


def trains_on_gpu(config: Config) -> bool:
    """Whether the run trains on a CUDA GPU: there is one, and ``use_cpu`` does not say otherwise."""
    return torch.cuda.is_available() and not config.training_arguments.get("use_cpu")


def load_base_model(name_or_path: str, config: Config) -> Any:
    """The model to train, or a full fine-tuning run's frozen reference, through the one loader: master
    weights stay float32 for full fine-tuning with mixed precision; LoRA bases live in the compute dtype
    (the adapter itself is kept float32 by peft), which halves memory and time in bf16."""
    dtype = run_dtype(config.bf16, config.fp16)
    # bitsandbytes places a quantised model itself, on the GPU when there is one: not with use_cpu.
    device = None if trains_on_gpu(config) else torch.device("cpu")
    return load_causal_lm(
        name_or_path,
        dtype=torch.float32 if config.finetuning_type == "full" else dtype,
        device=device,
        quantization=Quantization.of(config),
        compute_dtype=dtype,
        trust_remote_code=config.trust_remote_code,
        for_training=True,
    )


def lora_targets(targets: list[str]) -> list[str] | str:
    """``all`` -> peft's ``all-linear``: every linear layer but the output head, whatever its class
    (``nn.Linear``, GPT-2's ``Conv1D``, bitsandbytes' 4/8-bit linears); else the names given."""
    return "all-linear" if targets == ["all"] else targets


# Float attributes some attention modules read as their dropout probability at forward time instead of an
# nn.Dropout module (Llama, Qwen2, Gemma: ``attention_dropout``).
_DROPOUT_ATTRIBUTES = ("attention_dropout", "attn_dropout")


def disable_dropout(model: torch.nn.Module) -> int:
    """Turn off every dropout of ``model`` (as TRL's ``disable_dropout`` does); returns how many were on,
    for the log.

    In preference training dropout makes the policy's log-probs a random function of the weights, so the
    implicit rewards and the loss are noisy (GPT-2-family models ship with 0.1). Called on the base model
    before LoRA is added, so ``lora_dropout`` -- set on purpose -- stays as the user set it.
    """
    changed = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout) and module.p > 0:
            module.p = 0.0
            changed += 1
        for name in _DROPOUT_ATTRIBUTES:
            value = getattr(module, name, None)
            if isinstance(value, float) and value > 0:
                setattr(module, name, 0.0)
                changed += 1
    return changed


def place_like(reference: torch.nn.Module, policy: torch.nn.Module) -> torch.nn.Module:
    """Move a frozen reference copy to the policy's device and floating-point dtype (the trainer places the
    policy; a copy loaded beside it stays on the CPU in its load dtype otherwise)."""
    param = next(policy.parameters())
    return reference.to(device=param.device, dtype=param.dtype)


@dataclass
class TrainingModel:
    model: Any  # what the trainer optimises (a PeftModel for LoRA)
    tokenizer: Any
    reference: Any | None  # a frozen copy (full fine-tuning) or None
    reference_adapter: str | None  # name of a frozen adapter to use as reference (LoRA on an adapter)
    # The base a saved adapter names (a builtin's hub id, see BuiltinModel).
    base_model_id: str | None = None

    @property
    def has_reference(self) -> bool:
        """Whether a reference can be run: a frozen copy, or the policy's adapters switched off. Full
        fine-tuning on a warm reference cache loads neither."""
        from peft import PeftModel

        return self.reference is not None or isinstance(self.model, PeftModel)

    @contextlib.contextmanager
    def reference_mode(self) -> Iterator[Any]:
        """Yields the module to run for reference log-probs (see module docstring), in eval mode: the
        reference is a fixed function of its inputs, never a dropout sample of one."""
        if self.reference is not None:
            yield self.reference
            return
        model = self.model
        was_training = model.training
        model.eval()
        try:
            with adapter_active(model, self.reference_adapter or BASE_MODEL):
                yield model
        finally:
            model.train(was_training)


def _checkpointing(config: Config) -> bool:
    # Under the name TrainingArguments is given it (prefkit.train.settings.training_arguments), so both agree.
    return bool(current_argument_names(config.training_arguments).get("activation_checkpointing"))


def load_for_training(config: Config, model_path: str, needs_reference: bool) -> TrainingModel:
    """The trainable model (LoRA or full) and, where the loss needs one, its reference."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from prefkit.env import cache_dir

    tokenizer = load_tokenizer(model_path, trust_remote_code=config.trust_remote_code)
    base = load_base_model(model_path, config)
    if config.stage == "dpo" and config.disable_dropout and (turned_off := disable_dropout(base)):
        logger.info("turned off %d dropout layers for preference training (disable_dropout)", turned_off)
    if config.quantization_bit is not None:
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=_checkpointing(config))
    source = source_model_id(model_path, cache_dir(config.cache_dir))

    if config.finetuning_type == "full":
        if config.adapter_name_or_path:
            raise PrefkitError("adapter_name_or_path needs finetuning_type: lora (merge the adapter first)")
        reference = None
        if needs_reference:
            reference = load_base_model(model_path, config).eval().requires_grad_(False)
        return TrainingModel(base, tokenizer, reference, None, source)

    if _checkpointing(config):
        # With reentrant checkpointing a layer's output only requires grad if its input does; the frozen
        # embeddings' output does not, so the adapters inside checkpointed layers would get no gradient.
        base.enable_input_require_grads()
    if config.adapter_name_or_path:
        start = Path(config.adapter_name_or_path)
        adapters = [AdapterSpec(TRAINED_ADAPTER, start)]
        if needs_reference:
            adapters.append(AdapterSpec(REFERENCE_ADAPTER, start))
        model = attach_adapters(base, adapters, trainable=True)
        reference_adapter = REFERENCE_ADAPTER if needs_reference else None
        logger.info("continuing to train the adapter in %s", config.adapter_name_or_path)
        use_lean_lora_forward(model)
        return TrainingModel(model, tokenizer, None, reference_adapter, source)

    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=lora_targets(config.lora_target),
        task_type="CAUSAL_LM",
    )
    with peft_wrapping():
        model = get_peft_model(base, lora)
    use_lean_lora_forward(model)
    return TrainingModel(model, tokenizer, None, None, source)


def trainable_parameters(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
