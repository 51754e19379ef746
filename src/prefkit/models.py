"""Loading tokenizers and models by name: a local folder or a hub id."""

from __future__ import annotations

from typing import Any

from prefkit.errors import PrefkitError


class ModelLoadError(PrefkitError):
    """No model or tokenizer could be loaded from what the user named."""


def load_tokenizer(name_or_path: str, *, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"could not load a tokenizer from '{name_or_path}': {str(err).splitlines()[0]}\n"
            "Give a local model folder, or a hub id on a machine that can reach the hub."
        ) from err
    if tokenizer.pad_token is None:
        # Causal LMs often ship without a pad token; EOS is the usual stand-in (labels mask it out).
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
