"""`prefkit export`: merge trained LoRA adapters into their base model and write a plain transformers
folder -- safetensors weights, tokenizer with its chat template, generation config with the stop ids --
that ``AutoModelForCausalLM.from_pretrained`` loads with neither prefkit nor peft installed.

Several adapters trained on one base are combined first with peft's ``add_weighted_adapter``: the
default ``cat`` combination stacks them (the merged weight change is exactly the weighted sum of each
adapter's ``B @ A * scaling``; its rank is the sum of theirs, which costs nothing once merged); ``svd``
(the weighted sum refactored to the largest rank) and ``linear`` (A and B averaged separately; adapters
of equal rank only, approximate) are there for users who want peft's other behaviours.

The merge is done in fp32 on the CPU, then cast once to the chosen dtype, so bf16 weights are rounded
once, not twice. The folder is written beside its final name and renamed into place; an existing
non-empty folder is replaced only with ``force``, and never a model or adapter folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import prefkit
from prefkit.data.tokenize import ChatEncoder
from prefkit.env import cache_dir
from prefkit.errors import PrefkitError
from prefkit.infer.stop import stop_condition
from prefkit.model.adapters import AdapterSpec, attach_adapters, read_adapter_config, trained_template
from prefkit.model.inference import shared_template
from prefkit.model.loader import DTYPES, ModelLoadError, first_line, load_causal_lm, load_tokenizer
from prefkit.model.sources import resolve_first

logger = logging.getLogger(__name__)

COMBINATIONS = ("cat", "svd", "linear")
COMBINED = "combined"
EXPORT_RECORD = "prefkit_export.json"


class ExportError(PrefkitError):
    pass


@dataclass
class ExportResult:
    output: Path
    dtype: str
    adapters: list[str]
    weights: list[float]
    files: list[str]


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_output(output: Path, protected: Sequence[Path], force: bool) -> None:
    target = output.resolve()
    for folder in protected:
        folder = folder.resolve()
        if _inside(target, folder) or _inside(folder, target):
            raise ExportError(
                f"--output {output} overlaps {folder}, a model or adapter folder: export writes a new folder "
                "and never touches those"
            )
    if target.exists() and not target.is_dir():
        raise ExportError(f"--output {output} is a file; name a folder")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise ExportError(f"--output {output} exists and is not empty; pass --force to replace it")


def _weights(adapters: Sequence[AdapterSpec], weights: Sequence[float] | None) -> list[float]:
    if not adapters:
        raise ExportError("give at least one --adapter to merge")
    if weights is None or len(weights) == 0:
        return [1.0] if len(adapters) == 1 else [1.0 / len(adapters)] * len(adapters)
    if len(weights) != len(adapters):
        raise ExportError(
            f"--weights: {len(weights)} weight(s) for {len(adapters)} adapter(s); give one each"
        )
    return [float(w) for w in weights]


def _export_dtype(dtype: str, base_config: Any) -> torch.dtype:
    if dtype == "auto":  # the dtype the base model was saved in
        saved = getattr(base_config, "dtype", None)  # a config's older torch_dtype key is read into dtype
        return saved if isinstance(saved, torch.dtype) else DTYPES.get(str(saved), torch.float32)
    if dtype not in DTYPES:
        raise ExportError(f"--dtype {dtype!r}: expected one of auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def merge_adapters(
    model: Any, adapters: Sequence[AdapterSpec], weights: Sequence[float], combination: str
) -> Any:
    """The base model with the adapters' weighted combination merged into its weights (no peft left)."""
    if len(adapters) == 1 and weights[0] == 1.0:
        return model.merge_and_unload()
    if combination not in COMBINATIONS:
        raise ExportError(f"--combination {combination!r}: expected one of {', '.join(COMBINATIONS)}")
    try:
        model.add_weighted_adapter(
            [a.name for a in adapters], list(weights), adapter_name=COMBINED, combination_type=combination
        )
    except ValueError as err:  # e.g. linear with adapters of different ranks
        raise ExportError(f"cannot combine the adapters with {combination!r}: {err}") from err
    model.set_adapter(COMBINED)
    return model.merge_and_unload(adapter_names=[COMBINED])


def export_model(
    model: str | Sequence[str],
    adapters: Sequence[AdapterSpec],
    output: str | os.PathLike[str],
    *,
    weights: Sequence[float] | None = None,
    combination: str = "cat",
    dtype: str = "auto",
    template: str | None = None,
    force: bool = False,
    trust_remote_code: bool = False,
) -> ExportResult:
    from transformers import AutoConfig

    output = Path(output).expanduser()
    chosen_weights = _weights(adapters, weights)
    configs = [read_adapter_config(a.path) for a in adapters]
    model_path = resolve_first(model if isinstance(model, str) else list(model), cache_dir())
    protected = [a.path for a in adapters] + ([Path(model_path)] if Path(model_path).is_dir() else [])
    _check_output(output, protected, force)

    tokenizer = load_tokenizer(model_path, trust_remote_code=trust_remote_code)
    templates = {a.name: template or trained_template(a.path) for a in adapters}
    encoder = ChatEncoder(tokenizer, shared_template(template, templates))
    try:
        # "auto" is the dtype the base was saved in: read before loading, which rewrites the config's dtype
        # to the float32 the merge is computed in.
        saved = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"could not load a model from '{model_path}': {first_line(err)}") from err
    target_dtype = _export_dtype(dtype, saved)
    base = load_causal_lm(
        model_path, dtype=torch.float32, device=torch.device("cpu"), trust_remote_code=trust_remote_code
    )
    merged = merge_adapters(attach_adapters(base, adapters), adapters, chosen_weights, combination)
    merged.to(target_dtype)

    stop = stop_condition(merged, encoder)
    generation = merged.generation_config
    generation.eos_token_id = list(stop.ids) if len(stop.ids) != 1 else stop.ids[0]
    if tokenizer.pad_token_id is not None:
        generation.pad_token_id = tokenizer.pad_token_id
    if stop.strings:  # an end-of-turn marker that is not one token: generate(stop_strings=, tokenizer=)
        generation.stop_strings = list(stop.strings)
    if encoder.chat_template is not None:  # a named template: the export carries it
        tokenizer.chat_template = encoder.chat_template

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        record = {
            "prefkit_version": prefkit.__version__,
            "base_model": model_path,
            "adapters": [
                {"name": a.name, "path": str(a.path.resolve()), "rank": c.get("r"), "weight": w}
                for a, c, w in zip(adapters, configs, chosen_weights, strict=True)
            ],
            "combination": combination if len(adapters) > 1 or chosen_weights != [1.0] else None,
            "dtype": str(target_dtype).removeprefix("torch."),
            "stop_token_ids": list(stop.ids),
            "stop_strings": list(stop.strings),
        }
        (tmp / EXPORT_RECORD).write_text(json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8")
        _replace_folder(tmp, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("wrote the merged model to %s", output)
    return ExportResult(
        output,
        record["dtype"],
        [a.name for a in adapters],
        chosen_weights,
        sorted(p.name for p in output.iterdir()),
    )


def _replace_folder(new: Path, target: Path) -> None:
    """Put ``new`` at ``target``; an existing ``target`` is moved aside first and deleted only after."""
    if not target.exists():
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)
