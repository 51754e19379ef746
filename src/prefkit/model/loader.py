"""The one model loader.

Every command that needs a causal LM or its tokenizer gets it from here: training (the model it trains
and, for full fine-tuning, the frozen reference), evaluation, the quickstart, chat, generation, the
server and export. So one rule decides each of:

* **precision** -- a run computes in what its config says (``bf16``/``fp16``, else float32:
  :func:`run_dtype`); everything else takes ``auto`` unless told (:func:`pick_dtype`): bf16 on a CUDA GPU
  that has it (else fp16), bf16 on a CPU that computes it natively (AVX512-BF16 or AMX), else float32.
  Evaluating a run uses the run's own precision, so eval measures the model training trained.
* **device** -- CUDA when present, else the CPU (:func:`pick_device`).
* **attention** -- the model's own (``sdpa`` for the families prefkit tests); training switches it to
  prefkit's kernel under packed masks (:mod:`prefkit.model.attention`), which gives sdpa's numbers.
* **quantisation** -- ``quantization_bit`` 4 (NF4, double quantisation) or 8 through bitsandbytes.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from prefkit.env import cpu_bf16_fast
from prefkit.errors import PrefkitError

logger = logging.getLogger(__name__)


class ModelLoadError(PrefkitError):
    """No model or tokenizer could be loaded from what the user named."""


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


BASE_MODEL = "__base__"  # the adapter name that means "no adapter" (peft's reserved name)
DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
DTYPE_CHOICES = ("auto", *DTYPES)


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PrefkitError(f"device {device!r}: no CUDA GPU is available here (use --device cpu)")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise PrefkitError(f"device {device!r}: expected auto, cpu, cuda or cuda:N")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` (see the module docstring) or one of :data:`DTYPES`."""
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_bf16_fast() else torch.float32
    if dtype not in DTYPES:
        raise PrefkitError(f"dtype {dtype!r}: expected one of {', '.join(DTYPE_CHOICES)}")
    return DTYPES[dtype]


def run_dtype(bf16: bool | None, fp16: bool | None) -> torch.dtype:
    """The dtype a run computes in, from its ``bf16``/``fp16`` settings."""
    if bf16:
        return torch.bfloat16
    if fp16:
        return torch.float16
    return torch.float32


def autocast_dtype() -> torch.dtype | None:
    """The dtype autocast computes in where it is on (CUDA first), else None."""
    for device in ("cuda", "cpu"):
        if torch.is_autocast_enabled(device):
            return torch.get_autocast_dtype(device)
    return None


def forward_dtype(weight: torch.Tensor) -> torch.dtype:
    """The dtype a forward through ``weight`` computes in now: autocast's where it is on, else the
    weight's own."""
    return autocast_dtype() or weight.dtype


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}.get(dtype, str(dtype).removeprefix("torch."))


def load_tokenizer(
    name_or_path: str, *, trust_remote_code: bool = False, gguf_file: str | None = None
) -> Any:
    """The tokenizer of a model folder or hub id (``gguf_file``: of that GGUF file in the folder), with a
    pad token."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            name_or_path, trust_remote_code=trust_remote_code, gguf_file=gguf_file
        )
    except (OSError, ValueError) as err:
        if gguf_file is not None:
            raise ModelLoadError(
                f"could not read a tokenizer from {Path(name_or_path) / gguf_file}: {first_line(err)}"
            ) from err
        raise ModelLoadError(
            f"could not load a tokenizer from '{name_or_path}': {first_line(err)}\n"
            "Give a local model folder, or a hub id on a machine that can reach the hub."
        ) from err
    if tokenizer.pad_token is None:
        # Causal LMs often ship without a pad token; EOS is the usual stand-in (labels mask it out).
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def quantization_config(bits: int | None, compute_dtype: torch.dtype) -> Any:
    """bitsandbytes' config for ``quantization_bit`` (None: no quantisation)."""
    if bits is None:
        return None
    if not torch.cuda.is_available():
        raise PrefkitError(
            f"quantization_bit: {bits} (QLoRA) needs a CUDA GPU: bitsandbytes quantises on the GPU. On this "
            "machine, remove quantization_bit to train the LoRA in full precision."
        )
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError as err:
        raise PrefkitError("quantization_bit needs bitsandbytes: pip install bitsandbytes") from err
    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype if compute_dtype != torch.float32 else torch.float16,
    )


def load_causal_lm(
    name_or_path: str,
    *,
    dtype: torch.dtype,
    device: torch.device | None = None,
    quantization_bit: int | None = None,
    compute_dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
    for_training: bool = False,
    gguf_file: str | None = None,
) -> Any:
    """The model in ``dtype`` (its weights; a quantised model keeps 4/8-bit weights and computes in
    ``compute_dtype``), on ``device`` (a quantised model is placed by bitsandbytes on the current GPU;
    None leaves the model where it loads, the CPU). ``for_training`` switches the attention to prefkit's
    training kernel; otherwise the model is put in eval mode. ``gguf_file`` (a file in the folder
    ``name_or_path``) is dequantised: a quantised GGUF model can be neither trained nor saved."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    quantization = quantization_config(quantization_bit, compute_dtype or dtype)
    source = name_or_path
    if gguf_file is not None:
        from transformers import GgufConfig

        if quantization is not None:
            raise ValueError("a GGUF file is dequantised on loading: quantization_bit does not apply")
        kwargs.update(gguf_file=gguf_file, quantization_config=GgufConfig(dequantize=True), dtype=dtype)
        source = str(Path(name_or_path) / gguf_file)
    elif quantization is not None:
        kwargs["quantization_config"] = quantization
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    else:
        kwargs["dtype"] = dtype
    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"could not load a model from '{source}': {first_line(err)}") from err
    if quantization is None and device is not None:
        model.to(device)
    if for_training:
        from prefkit.model.attention import use_lean_attention

        use_lean_attention(model)
    else:
        model.eval()
    return model


@contextlib.contextmanager
def peft_wrapping() -> Iterator[None]:
    """Around peft's wrapping of a model (``get_peft_model``, ``PeftModel.from_pretrained``): peft 0.21 reads
    the model's ``is_gradient_checkpointing``, which transformers 5.23 deprecated -- a FutureWarning on
    every adapter loaded, about peft's code, that a user can do nothing about."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
        yield


@contextlib.contextmanager
def adapter_active(model: Any, name: str) -> Iterator[Any]:
    """``model`` (a PeftModel) computing with the adapter ``name`` -- every adapter off for
    :data:`BASE_MODEL` -- and the adapter active before restored after, as trainable as it was. The
    adapter switched to is not made trainable (a training run's frozen reference, an evaluation's
    starting point)."""
    if name == BASE_MODEL:
        with model.disable_adapter():
            yield model
        return
    before = model.active_adapter
    trainable = any(p.requires_grad for n, p in model.named_parameters() if f".{before}." in n)
    model.base_model.set_adapter(name, inference_mode=True)
    try:
        yield model
    finally:
        model.base_model.set_adapter(before, inference_mode=not trainable)


def context_length(model: Any) -> int | None:
    """How many tokens (prompt and reply) the model can attend to, from its config; None if unknown."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
