"""Loading the model and tokenizer a run trains, with LoRA/QLoRA, and its reference policy.

The reference (for the losses that need one, see losses.LOSSES):

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
from typing import TYPE_CHECKING, Any

import torch

from prefkit.errors import PrefkitError

if TYPE_CHECKING:
    from prefkit.config import Config

logger = logging.getLogger(__name__)

REFERENCE_ADAPTER = "reference"


class ModelLoadError(PrefkitError):
    """No model or tokenizer could be loaded from what the user named."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def load_tokenizer(name_or_path: str, *, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"could not load a tokenizer from '{name_or_path}': {_first_line(err)}\n"
            "Give a local model folder, or a hub id on a machine that can reach the hub."
        ) from err
    if tokenizer.pad_token is None:
        # Causal LMs often ship without a pad token; EOS is the usual stand-in (labels mask it out).
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def compute_dtype(config: Config) -> torch.dtype:
    if config.bf16:
        return torch.bfloat16
    if config.fp16:
        return torch.float16
    return torch.float32


def _quantization(config: Config) -> Any:
    if config.quantization_bit is None:
        return None
    if not torch.cuda.is_available():
        raise PrefkitError(
            f"quantization_bit: {config.quantization_bit} (QLoRA) needs a CUDA GPU: bitsandbytes quantises "
            "on the GPU. On this machine, remove quantization_bit to train the LoRA in full precision."
        )
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError as err:
        raise PrefkitError("quantization_bit needs bitsandbytes: pip install bitsandbytes") from err
    if config.quantization_bit == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype(config) if (config.bf16 or config.fp16) else torch.float16,
    )


def load_base_model(name_or_path: str, config: Config) -> Any:
    from transformers import AutoModelForCausalLM

    quantization = _quantization(config)
    kwargs: dict[str, Any] = {"trust_remote_code": config.trust_remote_code}
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    else:
        # Master weights stay fp32 for full fine-tuning with mixed precision; LoRA bases can live in the
        # compute dtype (the adapter itself is kept fp32 by peft), which halves memory and time in bf16.
        full = config.finetuning_type == "full"
        kwargs["dtype"] = torch.float32 if full else compute_dtype(config)
    try:
        return AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"could not load a model from '{name_or_path}': {_first_line(err)}") from err


def lora_targets(model: Any, targets: list[str]) -> list[str] | str:
    """``all`` -> every linear layer but the output head (LLaMA-Factory's meaning); else the names given."""
    if targets != ["all"]:
        return targets
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) or type(module).__name__ in {"Linear4bit", "Linear8bitLt"}:
            leaf = name.split(".")[-1]
            if leaf not in {"lm_head", "embed_out", "output_layer"}:
                names.add(leaf)
    return sorted(names)


@dataclass
class LoadedModel:
    model: Any  # what the trainer optimises (a PeftModel for LoRA)
    tokenizer: Any
    reference: Any | None  # a frozen copy (full fine-tuning) or None
    reference_adapter: str | None  # name of a frozen adapter to use as reference (LoRA on an adapter)
    needs_reference: bool

    @contextlib.contextmanager
    def reference_mode(self) -> Iterator[Any]:
        """Yields the module to run for reference log-probs (see module docstring)."""
        if self.reference is not None:
            yield self.reference
            return
        model = self.model
        if self.reference_adapter is None:
            with model.disable_adapter():
                yield model
            return
        active = model.active_adapter
        model.base_model.set_adapter(self.reference_adapter, inference_mode=True)
        try:
            yield model
        finally:
            model.base_model.set_adapter(active)


def load_for_training(config: Config, model_path: str, needs_reference: bool) -> LoadedModel:
    """The trainable model (LoRA or full) and, where the loss needs one, its reference."""
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

    tokenizer = load_tokenizer(model_path, trust_remote_code=config.trust_remote_code)
    base = load_base_model(model_path, config)
    if config.quantization_bit is not None:
        base = prepare_model_for_kbit_training(
            base, use_gradient_checkpointing=bool(config.training_arguments.get("gradient_checkpointing"))
        )

    if config.finetuning_type == "full":
        if config.adapter_name_or_path:
            raise PrefkitError("adapter_name_or_path needs finetuning_type: lora (merge the adapter first)")
        reference = None
        if needs_reference:
            reference = load_base_model(model_path, config).eval().requires_grad_(False)
        return LoadedModel(base, tokenizer, reference, None, needs_reference)

    if config.adapter_name_or_path:
        model = PeftModel.from_pretrained(base, config.adapter_name_or_path, is_trainable=True)
        reference_adapter = None
        if needs_reference:
            model.load_adapter(
                config.adapter_name_or_path, adapter_name=REFERENCE_ADAPTER, is_trainable=False
            )
            model.base_model.set_adapter("default")
            reference_adapter = REFERENCE_ADAPTER
        logger.info("continuing to train the adapter in %s", config.adapter_name_or_path)
        return LoadedModel(model, tokenizer, None, reference_adapter, needs_reference)

    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=lora_targets(base, config.lora_target),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, lora)
    return LoadedModel(model, tokenizer, None, None, needs_reference)


def trainable_parameters(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
