"""Loading a model, and optionally trained LoRA adapters, for inference: chat, generate, export, serve.

``--model`` takes everything ``model_name_or_path`` does (a builtin alias, a folder, a .gguf file, a
hub id, a list of candidates). Adapters are the folders ``prefkit train`` writes (peft's
``adapter_config.json`` + safetensors); several load onto one PeftModel under their names, and the
decode engine picks one per sequence. The model runs on CUDA when present, else the CPU; ``auto``
dtype is bf16 on a GPU that supports it (else fp16) and on CPUs with native bf16 matmuls (else fp32).

Chat template: ``--template`` if given; else, for an adapter, the template it was trained with
(``training_config.json`` in its folder), so a model trained with ``template: chatml`` on a tokenizer
that has none is prompted the way it learned; else the tokenizer's own.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from prefkit.data.tokenize import ChatEncoder
from prefkit.env import cache_dir
from prefkit.errors import PrefkitError
from prefkit.generate import context_length
from prefkit.model.loader import (
    BASE_MODEL,
    load_causal_lm,
    load_tokenizer,
    peft_wrapping,
    pick_device,
    pick_dtype,
)
from prefkit.model_sources import resolve_first

logger = logging.getLogger(__name__)

_ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class AdapterSpec:
    name: str
    path: Path


def parse_adapters(values: Sequence[str]) -> list[AdapterSpec]:
    """``NAME=PATH`` or ``PATH`` (named after its folder) for each ``--adapter``; names must be unique."""
    specs: list[AdapterSpec] = []
    for value in values:
        name, sep, path = value.partition("=")
        if not sep:
            name, path = Path(value).expanduser().resolve().name, value
        if not _ADAPTER_NAME.match(name) or name == BASE_MODEL:
            raise PrefkitError(
                f"--adapter {value!r}: the name {name!r} must be 1-64 letters, digits, '.', '_' or '-' "
                "(write NAME=PATH to choose one)"
            )
        if any(spec.name == name for spec in specs):
            raise PrefkitError(
                f"--adapter: the name {name!r} is given twice (write NAME=PATH to tell them apart)"
            )
        specs.append(AdapterSpec(name, Path(path).expanduser()))
    return specs


def read_adapter_config(path: Path) -> dict[str, Any]:
    """The adapter's ``adapter_config.json``, with a clear error for anything that is not a LoRA adapter."""
    if not path.is_dir():
        raise PrefkitError(f"adapter {path}: no such folder")
    config_file = path / "adapter_config.json"
    if not config_file.is_file():
        if (path / "config.json").is_file():
            raise PrefkitError(
                f"adapter {path}: this is a full model folder (config.json, no adapter_config.json); "
                "give it as --model instead"
            )
        raise PrefkitError(
            f"adapter {path}: no adapter_config.json (is this the folder `prefkit train` wrote?)"
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise PrefkitError(f"adapter {path}: adapter_config.json cannot be read: {err}") from err
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise PrefkitError(
            f"adapter {path}: peft_type {config.get('peft_type')!r}; prefkit serves, merges and exports LoRA "
            "adapters only"
        )
    return config


def trained_template(path: Path) -> str | None:
    """The named chat template an adapter was trained with (its run's ``training_config.json``), if any."""
    try:
        record = json.loads((path / "training_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    template = (record.get("config") or {}).get("template")
    return template if isinstance(template, str) and template else None


def _not_an_adapter(spec: str) -> None:
    """A user who passes an adapter folder as --model gets told what to do instead."""
    path = Path(spec).expanduser()
    if path.is_dir() and (path / "adapter_config.json").is_file() and not (path / "config.json").is_file():
        base = read_adapter_config(path).get("base_model_name_or_path") or "its base model"
        raise PrefkitError(
            f"--model {spec}: this is a LoRA adapter, not a model; run with --model {base} --adapter {spec}"
        )


@dataclass
class LoadedModel:
    model: Any  # the base model, or a PeftModel holding every adapter under its name
    tokenizer: Any
    model_path: str  # the resolved folder or hub id
    device: torch.device
    dtype: torch.dtype
    adapters: dict[str, Path] = field(default_factory=dict)
    encoders: dict[str, ChatEncoder] = field(default_factory=dict)  # by adapter name; BASE_MODEL: the base
    context_length: int | None = None

    def encoder(self, adapter: str | None = None) -> ChatEncoder:
        return self.encoders[adapter or BASE_MODEL]


def shared_template(template: str | None, adapter_templates: dict[str, str | None]) -> str | None:
    """The template for the base model (and a merged export): the one asked for, else the one every
    adapter was trained with when they agree, else None (the tokenizer's own)."""
    if template is not None:
        return template
    learned = {t for t in adapter_templates.values() if t}
    return learned.pop() if len(learned) == 1 else None


def load_for_inference(
    model: str | Sequence[str],
    adapters: Sequence[AdapterSpec] = (),
    *,
    template: str | None = None,
    dtype: str | torch.dtype = "auto",
    device: str = "auto",
    threads: int | None = None,
    trust_remote_code: bool = False,
    quantization_bit: int | None = None,
) -> LoadedModel:
    """The model in eval mode on its device, its tokenizer and one chat encoder per adapter. ``dtype`` is
    a name (``auto``, bf16, fp16, fp32) or a torch dtype; ``quantization_bit`` loads the base in 4 or 8
    bits as a QLoRA run trained it.

    ``threads`` sets PyTorch's CPU threads (default: its own choice, one per core). On a CPU shared
    with other busy processes, fewer threads can be many times faster: threads that wait for each
    other at every operation lose the most when the cores are taken."""
    for spec in [model] if isinstance(model, str) else model:
        _not_an_adapter(spec)
    for adapter in adapters:
        read_adapter_config(adapter.path)
    model_path = resolve_first(model if isinstance(model, str) else list(model), cache_dir())
    if threads is not None:
        if threads < 1:
            raise PrefkitError(f"threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    torch_device = pick_device(device)
    torch_dtype = dtype if isinstance(dtype, torch.dtype) else pick_dtype(dtype, torch_device)
    tokenizer = load_tokenizer(model_path, trust_remote_code=trust_remote_code)
    base = load_causal_lm(
        model_path,
        dtype=torch_dtype,
        device=torch_device,
        quantization_bit=quantization_bit,
        trust_remote_code=trust_remote_code,
    )
    loaded = attach_adapters(base, adapters)

    templates = {a.name: template or trained_template(a.path) for a in adapters}
    encoders = {BASE_MODEL: ChatEncoder(tokenizer, shared_template(template, templates))}
    for name, named in templates.items():
        encoders[name] = ChatEncoder(tokenizer, named)
    logger.info(
        "loaded %s on %s in %s%s",
        model_path,
        torch_device,
        str(torch_dtype).removeprefix("torch."),
        f" with adapters {', '.join(a.name for a in adapters)}" if adapters else "",
    )
    return LoadedModel(
        loaded,
        tokenizer,
        model_path,
        torch_device,
        torch_dtype,
        {a.name: a.path for a in adapters},
        encoders,
        context_length(base),
    )


def attach_adapters(base: Any, adapters: Sequence[AdapterSpec]) -> Any:
    """``base`` with each adapter loaded under its name (the first one active); ``base`` if none."""
    from peft import PeftModel

    model = base
    for i, adapter in enumerate(adapters):
        try:
            if i == 0:
                with peft_wrapping():
                    model = PeftModel.from_pretrained(base, str(adapter.path), adapter_name=adapter.name)
            else:
                model.load_adapter(str(adapter.path), adapter_name=adapter.name)
        except (RuntimeError, ValueError, KeyError, OSError) as err:
            trained_on = read_adapter_config(adapter.path).get("base_model_name_or_path") or "?"
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise PrefkitError(
                f"adapter '{adapter.name}' ({adapter.path}) does not fit this model: {first}\n"
                f"It was trained on {trained_on}; load it with that base model."
            ) from err
    if adapters:
        model.set_adapter(adapters[0].name)
        model.eval()
    return model
