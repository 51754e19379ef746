"""What the server serves from: the loaded model, the decode thread, the limits, and the names the API
knows (the base model's served name and each adapter's)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prefkit.errors import PrefkitError
from prefkit.model.inference import LoadedModel
from prefkit.model.loader import BASE_MODEL
from prefkit.serve.limits import ServeLimits
from prefkit.serve.scheduler import Scheduler


@dataclass(frozen=True)
class ServedModel:
    name: str
    adapter: str | None  # the decoder's adapter name (BASE_MODEL for the base of a PeftModel)
    root: str  # the folder or hub id it was loaded from
    parent: str | None  # the base's name, for adapters (as vLLM lists LoRA modules)


@dataclass
class ServerState:
    loaded: LoadedModel
    scheduler: Scheduler
    limits: ServeLimits
    models: dict[str, ServedModel]
    max_model_len: int
    api_key: str | None = None
    created: int = field(default_factory=lambda: int(time.time()))


def served_models(loaded: LoadedModel, base_name: str) -> dict[str, ServedModel]:
    """The base under ``base_name`` and each adapter under its own name (names must not collide)."""
    base_adapter = BASE_MODEL if loaded.adapters else None
    models = {base_name: ServedModel(base_name, base_adapter, loaded.model_path, None)}
    for name, path in loaded.adapters.items():
        if name in models:
            raise PrefkitError(
                f"--adapter {name}: the name is also the base model's served name; choose another"
            )
        models[name] = ServedModel(name, name, str(path), base_name)
    return models
