"""What a saved adapter says about its base model: peft writes the folder the weights were loaded from
(for a builtin alias, prefkit's cache); a user loading the adapter needs the model's own name."""

from __future__ import annotations

import json
from pathlib import Path

from prefkit.model.sources import builtin_origin


def record_base_model(folder: Path, base_model_id: str | None) -> None:
    """Name ``base_model_id`` as the base in a saved adapter's ``adapter_config.json`` and model card, where
    peft wrote the folder the weights were loaded from (for a builtin alias, prefkit's cache)."""
    config_path = folder / "adapter_config.json"
    if base_model_id is None or not config_path.is_file():
        return
    config = json.loads(config_path.read_text(encoding="utf-8"))
    written = config.get("base_model_name_or_path")
    if not written or written == base_model_id:
        return
    config["base_model_name_or_path"] = base_model_id
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    card = folder / "README.md"
    if card.is_file():
        text = card.read_text(encoding="utf-8").replace(written, base_model_id)
        if (note := builtin_origin(base_model_id)) is not None and note not in text:
            text = text.rstrip("\n") + f"\n\n## Base model\n\n{note}\n"
        card.write_text(text, encoding="utf-8")
