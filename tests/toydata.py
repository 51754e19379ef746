"""Small separable datasets for training tests."""

from __future__ import annotations

import json
from pathlib import Path


def toy_pairs(path: Path, n: int = 16) -> Path:
    """A separable preference: the chosen reply always agrees ("Yes, ..."), the rejected one refuses."""
    rows = [
        {
            "prompt": f"Can you help with task {i}?",
            "chosen": f"Yes, happy to help with task {i}.",
            "rejected": "No. I will not do that.",
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def toy_sft(path: Path, n: int = 16) -> Path:
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Say hello to {i}."},
                {"role": "assistant", "content": f"Hello, {i}!"},
            ]
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
