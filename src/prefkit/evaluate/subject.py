"""What `prefkit eval` evaluates, loaded as it was trained: the model, and the run's starting point.

A folder ``prefkit train`` wrote is evaluated as its run trained it. Its ``training_config.json`` (for a
checkpoint, the run folder's above it) gives the base model, the chat template, ``cutoff_len``, the
precision, the quantisation and the run's *starting point*:

* a LoRA run that started from the bare base: the base with the adapter switched off;
* a LoRA run that continued an adapter (``adapter_name_or_path``, e.g. SFT before DPO): that adapter --
  training keeps the copy it used as the reference beside the trained adapter (``reference/``), which
  is read first, then the folder the config names;
* a full fine-tuning run (the run folder is the model): the model it started from, loaded beside it.

The starting point is the reference of the implicit rewards and the ``--baseline``, as it was the
reference during training. A model that is no run has no starting point: no rewards that need a
reference, no baseline.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prefkit.errors import PrefkitError
from prefkit.model.adapters import AdapterSpec
from prefkit.model.inference import LoadedModel, load_for_inference
from prefkit.model.loader import BASE_MODEL, adapter_active, run_dtype
from prefkit.model.quantization import Quantization
from prefkit.model.training import REFERENCE_ADAPTER

logger = logging.getLogger(__name__)

TRAINING_CONFIG = "training_config.json"
TRAINED = "trained"  # the names eval loads a run's adapters under
START = "start"
_CHECKPOINT = re.compile(r"^checkpoint-\d+$")


def read_run(folder: str | Path | None) -> dict[str, Any]:
    """The resolved config of the run that wrote ``folder`` (its training_config.json; for a
    ``checkpoint-N``, the run folder's), or {} for a folder no run wrote."""
    if folder is None or not Path(folder).is_dir():
        return {}
    folder = Path(folder)
    path = folder / TRAINING_CONFIG
    if not path.is_file() and _CHECKPOINT.match(folder.name):
        path = folder.parent / TRAINING_CONFIG
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise PrefkitError(f"{path}: not a readable training_config.json ({err})") from err
    return (record.get("config") if isinstance(record, dict) else None) or {}


@dataclass
class Subject:
    """The loaded models of an evaluation and how to switch to the starting point."""

    model: LoadedModel  # the evaluated model; for LoRA, the base holding the trained (and starting) adapters
    trained: str | None  # the adapter active while the model is measured (None: the model as it is)
    start_adapter: str | None  # the starting point as an adapter of ``model`` (BASE_MODEL: every one off)
    start_model: LoadedModel | None  # a full fine-tuning run's starting model
    started_from: str | None  # what the starting point is, for the report
    quantization: Quantization | None  # what the base was loaded with, as the run trained it

    @property
    def has_start(self) -> bool:
        return self.start_adapter is not None or self.start_model is not None

    def reference(self) -> Callable[[], contextlib.AbstractContextManager[Any]] | None:
        """A context factory yielding the module that computes as the starting point does, or None."""
        if self.start_model is not None:
            start = self.start_model.model
            return lambda: contextlib.nullcontext(start)
        if self.start_adapter is not None:
            name = self.start_adapter
            return lambda: adapter_active(self.model.model, name)
        return None

    def active(self, adapter: str | None) -> contextlib.AbstractContextManager[Any]:
        return (
            contextlib.nullcontext(self.model.model)
            if adapter is None
            else adapter_active(self.model.model, adapter)
        )


GONE = Path("/nonexistent")  # what starting_adapter returns for an adapter that is gone


def starting_adapter(adapter: Path, run: dict[str, Any], needed: bool) -> Path | None:
    """The adapter a LoRA run continued, None when it started from the bare base, :data:`GONE` when the
    adapter it continued is gone: an error where it is ``needed`` (rewards against it or a baseline were
    asked for), else a warning."""
    saved = adapter / REFERENCE_ADAPTER
    if (saved / "adapter_config.json").is_file():
        return saved
    if not run.get("adapter_name_or_path"):
        return None
    named = Path(run["adapter_name_or_path"]).expanduser()
    if (named / "adapter_config.json").is_file():
        return named
    problem = (
        f"the run in {adapter} started from the adapter {named}, which is gone; it is the run's reference "
        "and baseline"
    )
    if needed:
        raise PrefkitError(
            f"{problem}. Put it back at {named} (or a copy of it at {saved}), or evaluate without --baseline "
            "and with a --pref-loss that needs no reference (simpo or orpo)"
        )
    logger.warning("%s: evaluating the trained adapter alone", problem)
    return GONE


def load_subject(
    model: str,
    adapter: str | None,
    run: dict[str, Any],
    *,
    template: str | None,
    dtype: str,
    needs_start: bool,
) -> Subject:
    """The model as its run trained it (precision unless ``dtype`` says otherwise, quantisation,
    remote code) and its starting point (see the module docstring). ``needs_start``: the evaluation
    cannot go on without the starting point."""
    chosen_dtype: str | torch.dtype = (
        run_dtype(run.get("bf16"), run.get("fp16")) if dtype == "auto" and run else dtype
    )
    quantization = Quantization.of(run)
    options = {
        "template": template,
        "dtype": chosen_dtype,
        "trust_remote_code": bool(run.get("trust_remote_code")),
    }
    if adapter is None:
        full_run = run.get("finetuning_type") == "full" and run.get("model_name_or_path")
        loaded = load_for_inference(model, [], quantization=quantization, **options)
        start_model = None
        if full_run and needs_start:
            start_model = load_for_inference(run["model_name_or_path"], [], **options)
        started = str(run["model_name_or_path"]) if full_run else None
        return Subject(loaded, None, None, start_model, started, quantization)
    start = starting_adapter(Path(adapter), run, needs_start)
    if start is GONE:
        loaded = load_for_inference(
            model, [AdapterSpec(TRAINED, Path(adapter))], quantization=quantization, **options
        )
        return Subject(loaded, TRAINED, None, None, None, quantization)
    adapters = [AdapterSpec(TRAINED, Path(adapter))] + ([AdapterSpec(START, start)] if start else [])
    loaded = load_for_inference(model, adapters, quantization=quantization, **options)
    started = str(start) if start else "the base model, adapter switched off"
    return Subject(loaded, TRAINED, START if start else BASE_MODEL, None, started, quantization)
