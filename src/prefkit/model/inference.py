"""Loading a model, and optionally trained LoRA adapters, for inference: chat, generate, export, serve.

``--model`` takes everything ``model_name_or_path`` does (a builtin alias, a folder, a .gguf file, a
hub id, a list of candidates). Adapters are the folders ``prefkit train`` writes (peft's
``adapter_config.json`` + safetensors); several load onto one PeftModel under their names, and the
decoder picks one per sequence. The model runs on CUDA when present, else the CPU; ``auto``
dtype is bf16 on a GPU that supports it (else fp16) and on CPUs with native bf16 matmuls (else fp32).

Chat template: ``--template`` if given; else, for an adapter, the template it was trained with
(``training_config.json`` in its folder), so a model trained with ``template: chatml`` on a tokenizer
that has none is prompted the way it learned; else the tokenizer's own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from prefkit.data.tokenize import ChatEncoder
from prefkit.env import cache_dir
from prefkit.errors import PrefkitError
from prefkit.model.adapters import AdapterSpec, attach_adapters, read_adapter_config, trained_template
from prefkit.model.loader import (
    BASE_MODEL,
    context_length,
    load_causal_lm,
    load_tokenizer,
    pick_device,
    pick_dtype,
)
from prefkit.model.quantization import Quantization
from prefkit.model.sources import resolve_first

logger = logging.getLogger(__name__)


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
    quantization: Quantization | None = None,
) -> LoadedModel:
    """The model in eval mode on its device, its tokenizer and one chat encoder per adapter. ``dtype`` is
    a name (``auto``, bf16, fp16, fp32) or a torch dtype; ``quantization`` loads the base in 4 or 8 bits
    as a QLoRA run trained it.

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
        quantization=quantization,
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
