"""Quantising the frozen base model with bitsandbytes (QLoRA): the settings, bitsandbytes' config for them,
and a check -- by trying -- that this machine can run them.

bitsandbytes 0.50 runs 4-bit (NF4, FP4) and 8-bit layers on a CUDA GPU and, with its own torch code, on
the CPU; the check quantises one small layer on the device the run will use and runs it forward and
backward, so a machine that cannot gets one clear line at pre-flight instead of a failure after loading.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import torch

from prefkit.errors import PrefkitError

EXTRA = "pip install 'prefkit[qlora]'  (bitsandbytes>=0.50)"


class QuantizationError(PrefkitError):
    """This machine cannot run the quantisation asked for (bitsandbytes missing, or it fails here)."""


@dataclass(frozen=True)
class Quantization:
    """``quantization_bit`` with, for 4 bits, ``quantization_type`` (NF4 or FP4) and
    ``double_quantization`` (quantise the per-block scales too: ~0.4 bits per weight saved)."""

    bits: Literal[4, 8]
    kind: Literal["nf4", "fp4"] = "nf4"
    double: bool = True

    @classmethod
    def of(cls, settings: Any) -> Quantization | None:
        """From a Config or a run's training_config.json (a dict); None where nothing is quantised."""

        def get(key: str, default: Any = None) -> Any:
            return (
                settings.get(key, default) if isinstance(settings, dict) else getattr(settings, key, default)
            )

        bits = get("quantization_bit")
        if not bits:
            return None
        return cls(int(bits), get("quantization_type") or "nf4", bool(get("double_quantization", True)))

    def describe(self) -> str:
        if self.bits == 8:
            return "8-bit (bitsandbytes LLM.int8)"
        return f"4-bit {self.kind.upper()}{' with double quantisation' if self.double else ''}"

    def identity(self) -> dict[str, Any]:
        """What makes a quantised model's numbers differ from another's (the reference cache keys on it)."""
        if self.bits == 8:
            return {"bits": 8}
        return {"bits": 4, "type": self.kind, "double": self.double}

    @staticmethod
    def compute_dtype(run_dtype: torch.dtype, device: torch.device) -> torch.dtype:
        """What 4-bit layers compute in: the run's precision, but float16 for float32 on a GPU, as
        bitsandbytes' fast kernels expect (on the CPU float32 stays float32)."""
        return torch.float16 if device.type == "cuda" and run_dtype == torch.float32 else run_dtype

    def bnb_config(self, compute_dtype: torch.dtype, device: torch.device) -> Any:
        """transformers' BitsAndBytesConfig for a run computing in ``compute_dtype`` on ``device``."""
        from transformers import BitsAndBytesConfig

        _import_bitsandbytes(self.bits)
        if self.bits == 8:
            return BitsAndBytesConfig(load_in_8bit=True)
        compute_dtype = self.compute_dtype(compute_dtype, device)
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=self.kind,
            bnb_4bit_use_double_quant=self.double,
            bnb_4bit_compute_dtype=compute_dtype,
        )


def _import_bitsandbytes(bits: int) -> Any:
    try:
        import bitsandbytes
    except ImportError as err:
        raise QuantizationError(
            f"a base quantised to {bits} bits (quantization_bit: {bits}) needs bitsandbytes, which is not "
            f"installed: {EXTRA}"
        ) from err
    return bitsandbytes


def _not_int8_cast_notice(record: logging.LogRecord) -> bool:
    return "inputs will be cast" not in record.getMessage()


# LLM.int8 logs "inputs will be cast ... to float16" on every forward of every 8-bit layer.
logging.getLogger("bitsandbytes.autograd._functions").addFilter(_not_int8_cast_notice)


def check_runs(quantization: Quantization, device: torch.device, compute_dtype: torch.dtype) -> None:
    """Quantise a 64x64 layer on ``device`` and run it forward and backward; raise a QuantizationError
    saying what failed where it cannot (an old bitsandbytes without CPU support, an unsupported GPU)."""
    bnb = _import_bitsandbytes(quantization.bits)
    config = quantization.bnb_config(compute_dtype, device)
    try:
        if quantization.bits == 8:
            layer = bnb.nn.Linear8bitLt(64, 64, bias=False, has_fp16_weights=False)
        else:
            layer = bnb.nn.Linear4bit(
                64,
                64,
                bias=False,
                compute_dtype=config.bnb_4bit_compute_dtype,
                quant_type=quantization.kind,
                compress_statistics=quantization.double,
            )
        layer = layer.to(device)
        x = torch.randn(2, 64, device=device, requires_grad=True)
        out = layer(x)
        out.float().sum().backward()
        if not torch.isfinite(out).all() or x.grad is None:
            raise RuntimeError("a quantised layer gave a non-finite output or no gradient")
    except Exception as err:  # whatever bitsandbytes raises on a machine it does not support
        version = getattr(bnb, "__version__", "?")
        raise QuantizationError(
            f"quantization_bit: {quantization.bits} ({quantization.describe()}) does not run on "
            f"{device.type} with bitsandbytes {version}: {type(err).__name__}: {err}. "
            "bitsandbytes runs 4-bit and 8-bit layers on CUDA GPUs and, from 0.50, on the CPU; upgrade it "
            f"({EXTRA}) or remove quantization_bit to train the LoRA on the unquantised base."
        ) from err


def dequantize(model: Any) -> Any:
    """``model`` with each bitsandbytes layer replaced by a plain float32 ``nn.Linear`` holding its weights
    de-quantised: the weights a QLoRA adapter trained against, into which export merges it.
    (transformers' own ``dequantize()`` computes in bfloat16, which is not the weights the layers used.)"""
    bnb = _import_bitsandbytes(4)
    from bitsandbytes import functional

    for name, module in list(model.named_modules()):
        if isinstance(module, bnb.nn.Linear4bit):
            weight = functional.dequantize_4bit(module.weight.data, module.weight.quant_state)
        elif isinstance(module, bnb.nn.Linear8bitLt):
            weight = functional.int8_vectorwise_dequant(module.weight.data, module.weight.SCB)
        else:
            continue
        plain = torch.nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
        plain.weight.data = weight.float().reshape(module.out_features, module.in_features)
        if module.bias is not None:
            plain.bias.data = module.bias.data.float()
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, plain)
    # The model is no longer quantised: saved, it must not claim to be.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for flag in ("is_quantized", "is_loaded_in_4bit", "is_loaded_in_8bit"):
        if hasattr(model, flag):
            setattr(model, flag, False)
    model.hf_quantizer = None
    model.quantization_method = None  # else transformers refuses to cast the model's dtype
    return model
