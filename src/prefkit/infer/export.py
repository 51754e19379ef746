"""`prefkit export`: merge trained LoRA adapters into their base model and write a plain transformers
folder -- safetensors weights, tokenizer with its chat template, generation config with the stop ids --
that ``AutoModelForCausalLM.from_pretrained`` loads with neither prefkit nor peft installed.

Several adapters trained on one base are combined first with peft's ``add_weighted_adapter``: the
default ``cat`` combination stacks them (the merged weight change is exactly the weighted sum of each
adapter's ``B @ A * scaling``; its rank is the sum of theirs, which costs nothing once merged); ``svd``
(the weighted sum refactored to the largest rank) and ``linear`` (A and B averaged separately; adapters
of equal rank only, approximate) are there for users who want peft's other behaviours.

The merge is done in fp32 on the CPU, then cast once to the chosen dtype, so bf16 weights are rounded
once, not twice.

Output safety. The folder is written beside its final name (``.NAME.tmp-PID``, carrying a marker file
while it is incomplete) and renamed into place. An existing folder is replaced only when it is empty,
or with ``force`` when it carries ``prefkit_export.json`` (an earlier export): a folder export did not
write is never deleted, nor a model or adapter folder, nor the working folder (``--output .``: the
swap would leave the user's shell in a deleted folder). A symbolic link is followed: its target is the
folder written. What a killed export left beside the output (``.NAME.tmp-PID``, ``.NAME.old-PID``) is
cleaned up by the next export to that output once that PID is gone.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import prefkit
from prefkit.data.tokenize import ChatEncoder
from prefkit.env import cache_dir
from prefkit.errors import PrefkitError
from prefkit.infer.stop import StopCondition, stop_condition
from prefkit.model.adapters import (
    AdapterSpec,
    attach_adapters,
    read_adapter_config,
    trained_dtype,
    trained_quantization,
    trained_template,
)
from prefkit.model.inference import shared_template
from prefkit.model.loader import DTYPES, ModelLoadError, first_line, load_causal_lm, load_tokenizer
from prefkit.model.quantization import Quantization, dequantize
from prefkit.model.sources import resolve_first

logger = logging.getLogger(__name__)

COMBINATIONS = ("cat", "svd", "linear")
COMBINED = "combined"
EXPORT_RECORD = "prefkit_export.json"  # in every finished export: what --force may replace
PARTIAL_MARKER = ".prefkit-export-partial"  # in a temporary folder while it is written: pid and host


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


def _output_folder(output: str | os.PathLike[str]) -> Path:
    """The folder ``--output`` names, absolute with links followed; the working folder, or one holding
    it, is refused: export swaps its output by renames, which would leave the shell that ran it (and
    this process) in a deleted folder."""
    target = Path(output).expanduser().resolve()
    if _inside(Path.cwd().resolve(), target):
        raise ExportError(
            f"--output {output} is {'' if target == Path.cwd().resolve() else 'a folder holding '}the "
            "folder you are working in: export replaces its output folder whole, which would leave your "
            "shell in a deleted folder; name a new folder, such as --output merged"
        )
    return target


def _check_overlap(target: Path, given: Path, protected: Sequence[Path]) -> None:
    for folder in protected:
        folder = folder.resolve()
        if _inside(target, folder) or _inside(folder, target):
            raise ExportError(
                f"--output {given} overlaps {folder}, a model or adapter folder: export writes a new folder "
                "and never touches those"
            )


def _check_output(target: Path, given: Path, force: bool) -> None:
    if target.exists() and not target.is_dir():
        raise ExportError(f"--output {given} is a file; name a folder")
    if not target.is_dir() or not any(target.iterdir()):
        return
    if not (target / EXPORT_RECORD).is_file():
        raise ExportError(
            f"--output {given} is not empty and has no {EXPORT_RECORD}, so prefkit export did not write "
            "it: export replaces only its own folders, even with --force. Name a new folder, or empty "
            "this one yourself"
        )
    if not force:
        raise ExportError(
            f"--output {given} exists and is not empty (an earlier export); pass --force to replace it"
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _remove_leftovers(target: Path) -> None:
    """Clean up after exports to ``target`` that were killed: a ``.NAME.tmp-PID`` folder carrying
    export's marker, written on this machine by a process that is gone, is deleted; a ``.NAME.old-PID``
    (the previous output moved aside) of a gone process is deleted once ``target`` exists, and put
    back when the kill came between the two renames and ``target`` is missing, so no finished export
    is lost."""
    if not target.parent.is_dir():
        return
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(tmp|old)-(\d+)")
    host = socket.gethostname()
    for entry in sorted(target.parent.iterdir()):
        match = pattern.fullmatch(entry.name)
        if match is None or _pid_alive(int(match.group(2))):
            continue
        if match.group(1) == "tmp":
            try:
                marker = json.loads((entry / PARTIAL_MARKER).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # not export's: never delete it
            if not isinstance(marker, dict) or marker.get("host") != host:
                continue  # another machine's export (a shared disk): its PID says nothing here
            logger.info("removing %s, left by an export that was killed", entry)
            shutil.rmtree(entry, ignore_errors=True)
        elif not target.exists() and not target.is_symlink():
            logger.warning("putting back %s as %s: an export was killed while replacing it", entry, target)
            os.replace(entry, target)
        else:
            logger.info("removing %s, left by an export that was killed", entry)
            if entry.is_symlink() or not entry.is_dir():
                entry.unlink()
            else:
                shutil.rmtree(entry, ignore_errors=True)


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


def _base_quantization(adapters: Sequence[AdapterSpec]) -> Quantization | None:
    """The quantisation the adapters' runs trained on (QLoRA), which the base is merged in; adapters
    trained on differently quantised bases cannot share one merged base."""
    found = {a.name: trained_quantization(a.path) for a in adapters}
    if len(set(found.values())) > 1:
        listed = ", ".join(f"{n}: {q.describe() if q else 'unquantised'}" for n, q in found.items())
        raise PrefkitError(
            f"the adapters were trained on differently quantised bases ({listed}): export them separately"
        )
    return next(iter(found.values()), None)


def _float32_base(
    model_path: str,
    adapters: Sequence[AdapterSpec],
    quantization: Quantization | None,
    trust_remote_code: bool,
) -> Any:
    """The base to merge into, in float32 on the CPU: as saved, or for QLoRA adapters quantised from the
    precision their run loaded it in (the 4-bit codes depend on it) and de-quantised -- the weights the
    adapters trained against."""
    cpu = torch.device("cpu")
    if quantization is None:
        return load_causal_lm(
            model_path, dtype=torch.float32, device=cpu, trust_remote_code=trust_remote_code
        )
    trained = trained_dtype(adapters[0].path)
    base = load_causal_lm(
        model_path,
        dtype=trained,
        device=cpu,
        quantization=quantization,
        compute_dtype=trained,
        trust_remote_code=trust_remote_code,
    )
    return dequantize(base).float()


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

    given = Path(output)
    target = _output_folder(given)
    chosen_weights = _weights(adapters, weights)
    configs = [read_adapter_config(a.path) for a in adapters]
    candidates = [model] if isinstance(model, str) else list(model)
    local = [Path(c).expanduser() for c in candidates if Path(c).expanduser().is_dir()]
    _check_overlap(target, given, [a.path for a in adapters] + local)
    _remove_leftovers(target)
    _check_output(target, given, force)
    model_path = resolve_first(candidates, cache_dir())
    if Path(model_path).is_dir():  # an alias or hub id is a folder only once resolved
        _check_overlap(target, given, [Path(model_path)])

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
    quantization = _base_quantization(adapters)
    base = _float32_base(model_path, adapters, quantization, trust_remote_code)
    merged = merge_adapters(attach_adapters(base, adapters), adapters, chosen_weights, combination)
    merged.to(target_dtype)

    stop = _stop_in_generation_config(merged, tokenizer, encoder)
    record = {
        "prefkit_version": prefkit.__version__,
        "base_model": model_path,
        "adapters": [
            {"name": a.name, "path": str(a.path.resolve()), "rank": c.get("r"), "weight": w}
            for a, c, w in zip(adapters, configs, chosen_weights, strict=True)
        ],
        "combination": combination if len(adapters) > 1 or chosen_weights != [1.0] else None,
        "dtype": str(target_dtype).removeprefix("torch."),
        "base_weights": f"{quantization.describe()}, de-quantised: the weights the adapter trained against"
        if quantization
        else "as saved",
        "stop_token_ids": list(stop.ids),
        "stop_strings": list(stop.strings),
    }
    _write_folder(target, merged, tokenizer, record)
    logger.info("wrote the merged model to %s", target)
    return ExportResult(
        target,
        record["dtype"],
        [a.name for a in adapters],
        chosen_weights,
        sorted(p.name for p in target.iterdir()),
    )


def _stop_in_generation_config(merged: Any, tokenizer: Any, encoder: ChatEncoder) -> StopCondition:
    """Write where a reply ends into the model's generation config (and a named chat template into the
    tokenizer), so plain transformers stops where prefkit does; returns the stop condition."""
    stop = stop_condition(merged, encoder)
    generation = merged.generation_config
    generation.eos_token_id = list(stop.ids) if len(stop.ids) != 1 else stop.ids[0]
    if tokenizer.pad_token_id is not None:
        generation.pad_token_id = tokenizer.pad_token_id
    if stop.strings:  # an end-of-turn marker that is not one token: generate(stop_strings=, tokenizer=)
        generation.stop_strings = list(stop.strings)
    if encoder.chat_template is not None:  # a named template: the export carries it
        tokenizer.chat_template = encoder.chat_template
    return stop


def _write_folder(target: Path, merged: Any, tokenizer: Any, record: dict[str, Any]) -> None:
    """The model, tokenizer and export record written beside ``target`` and renamed into place. The
    temporary folder is marked as export's first, so a later export can tell it from a user's folder if
    this process is killed; the mark goes only after the rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        marker = {"pid": os.getpid(), "host": socket.gethostname()}
        (tmp / PARTIAL_MARKER).write_text(json.dumps(marker), encoding="utf-8")
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / EXPORT_RECORD).write_text(json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8")
        _replace_folder(tmp, target)
        (target / PARTIAL_MARKER).unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _replace_folder(new: Path, target: Path) -> None:
    """Put ``new`` at ``target`` (a real folder, links resolved); an existing ``target`` is moved aside
    first and deleted only after."""
    if not target.exists():
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)
