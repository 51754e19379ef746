"""LoRA adapters: naming them (``--adapter NAME=PATH``), checking a folder is one, the chat template one
was trained with, and loading several onto one model -- for inference (each under its name, the decoder
picking one per sequence) and for training on from an adapter (the first trained, a frozen copy as the
reference)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prefkit.errors import PrefkitError
from prefkit.model.loader import BASE_MODEL, first_line, peft_wrapping, run_dtype
from prefkit.model.quantization import Quantization

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


def _trained_config(path: Path) -> dict[str, Any]:
    """The settings of the run that trained the adapter in ``path`` (its ``training_config.json``), or {}."""
    found = path / "training_config.json"
    if not found.is_file() and re.fullmatch(r"checkpoint-\d+", path.name):
        found = path.parent / "training_config.json"  # a checkpoint's run folder holds its settings
    try:
        record = json.loads(found.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    config = record.get("config") if isinstance(record, dict) else None
    return config if isinstance(config, dict) else {}


def trained_template(path: Path) -> str | None:
    """The named chat template an adapter was trained with, if any."""
    template = _trained_config(path).get("template")
    return template if isinstance(template, str) and template else None


def trained_quantization(path: Path) -> Quantization | None:
    """How the base an adapter was trained on was quantised (QLoRA), or None."""
    return Quantization.of(_trained_config(path))


def trained_dtype(path: Path) -> torch.dtype:
    """The precision the run that trained the adapter in ``path`` computed in (bf16, fp16, else fp32)."""
    config = _trained_config(path)
    return run_dtype(config.get("bf16"), config.get("fp16"))


def attach_adapters(base: Any, adapters: Sequence[AdapterSpec], *, trainable: bool = False) -> Any:
    """``base`` with each adapter loaded under its name, the first one active; ``base`` if none. For
    inference the model is put in eval mode. With ``trainable`` the first adapter is the one trained and
    the others stay frozen (a run's reference: the adapter training started from, as loaded)."""
    from peft import PeftModel

    model = base
    for i, adapter in enumerate(adapters):
        try:
            if i == 0:
                with peft_wrapping():
                    model = PeftModel.from_pretrained(
                        base, str(adapter.path), adapter_name=adapter.name, is_trainable=trainable
                    )
            else:
                model.load_adapter(str(adapter.path), adapter_name=adapter.name, is_trainable=False)
        except (RuntimeError, ValueError, KeyError, OSError) as err:
            raise _not_loaded(adapter, err) from err
    if adapters and trainable:
        model.base_model.set_adapter(adapters[0].name)  # the first trainable, the others as they are
    elif adapters:
        model.set_adapter(adapters[0].name)
        model.eval()
    return model


def _not_loaded(adapter: AdapterSpec, err: BaseException) -> PrefkitError:
    """Why an adapter did not load: not a folder here (a hub id that cannot be fetched), or one that does
    not fit the model, with the base it names."""
    if not adapter.path.is_dir():
        return PrefkitError(
            f"adapter '{adapter.name}' ({adapter.path}) could not be loaded: {first_line(err)}"
        )
    try:
        trained_on = read_adapter_config(adapter.path).get("base_model_name_or_path") or "?"
    except PrefkitError:
        trained_on = "?"
    return PrefkitError(
        f"adapter '{adapter.name}' ({adapter.path}) does not fit this model: {first_line(err)}\n"
        f"It was trained on {trained_on}; load it with that base model."
    )
