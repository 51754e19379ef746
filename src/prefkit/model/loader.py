"""The one model loader.

Every command that needs a causal LM or its tokenizer gets it from here: training (the model it trains
and, for full fine-tuning, the frozen reference), evaluation, the quickstart, chat, generation, the
server and export. So one rule decides each of:

* **precision** -- a run computes in what its config says (``bf16``/``fp16``, else float32:
  :func:`run_dtype`); everything else takes ``auto`` unless told (:func:`pick_dtype`): bf16 on a CUDA GPU
  that has it (else fp16), bf16 on a CPU that computes it natively and faster than float32 (measured once:
  :func:`prefkit.env.cpu_bf16_fast`), else float32.
  Evaluating a run uses the run's own precision, so eval measures the model training trained.
* **device** -- CUDA when present, else the CPU (:func:`pick_device`).
* **attention** -- the model's own (``sdpa`` for the families prefkit tests); training switches it to
  prefkit's kernel under packed masks (:mod:`prefkit.model.attention`), which gives sdpa's numbers.
* **quantisation** -- ``quantization_bit`` 4 (NF4 or FP4) or 8 through bitsandbytes (model/quantization.py).
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
from prefkit.model.quantization import Quantization

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


def load_causal_lm(
    name_or_path: str,
    *,
    dtype: torch.dtype,
    device: torch.device | None = None,
    quantization: Quantization | None = None,
    compute_dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
    for_training: bool = False,
    gguf_file: str | None = None,
) -> Any:
    """The model in ``dtype`` (its weights; a quantised model keeps 4/8-bit weights and computes in
    ``compute_dtype``), on ``device`` (None leaves the model where it loads, the CPU; a quantised model
    is placed by bitsandbytes on the current GPU, or stays on the CPU). ``for_training`` switches the
    attention to prefkit's training kernel; otherwise the model is put in eval mode. ``gguf_file`` (a file
    in the folder ``name_or_path``) is dequantised: a quantised GGUF model can be neither trained nor
    saved."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    source = name_or_path
    on_gpu = device.type == "cuda" if device is not None else torch.cuda.is_available()
    if gguf_file is not None:
        from transformers import GgufConfig

        if quantization is not None:
            raise ValueError("a GGUF file is dequantised on loading: quantization_bit does not apply")
        kwargs.update(gguf_file=gguf_file, quantization_config=GgufConfig(dequantize=True), dtype=dtype)
        source = str(Path(name_or_path) / gguf_file)
    elif quantization is not None:
        target = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
        kwargs["quantization_config"] = quantization.bnb_config(compute_dtype or dtype, target)
        # bitsandbytes quantises while loading, on the device the weights are loaded to.
        kwargs["device_map"] = {"": target.index if on_gpu else "cpu"}
        kwargs["dtype"] = dtype
    else:
        kwargs["dtype"] = dtype
    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"could not load a model from '{source}': {first_line(err)}") from err
    if quantization is None and device is not None:
        model.to(device)
    if quantization is not None and not on_gpu:
        _keep_cpu_4bit_layers_unpacked(model, every=for_training)
    if for_training:
        from prefkit.model.attention import use_lean_attention

        use_lean_attention(model)
    else:
        model.eval()
    return model


def _keep_cpu_4bit_layers_unpacked(model: Any, *, every: bool) -> None:
    """bitsandbytes' CPU 4-bit layers repack their weights for a faster bf16 kernel at their first forward
    without gradients in eval mode. That kernel has no backward: once repacked, a layer passes no gradient
    to the layers below it (the adapters there would silently stop learning), and it computes slightly
    different numbers than the training kernel (a reference pass would not match the policy's at step 1).
    So a model loaded for training never repacks (``every``); for inference only the layers whose input
    width is not a multiple of the quantisation block are kept unpacked (the repacking fails on them)."""
    for module in model.modules():
        blocksize = getattr(getattr(getattr(module, "weight", None), "quant_state", None), "blocksize", None)
        packs = blocksize and hasattr(module, "support_avx512bf16_for_cpu")
        if packs and (every or module.in_features % blocksize):
            module.support_avx512bf16_for_cpu = False


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
