"""What this machine offers prefkit: library versions, the device, bf16 support, the cache folder."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

CACHE_ENV = "PREFKIT_CACHE"


def cache_dir(configured: str | os.PathLike | None = None) -> Path:
    """prefkit's cache folder: the `cache_dir` setting, else $PREFKIT_CACHE, else ~/.cache/prefkit."""
    chosen = configured or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "prefkit"
    return Path(chosen).expanduser()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def cpu_bf16_fast() -> bool:
    """True where the CPU does bf16 matmuls natively (AVX512-BF16 or AMX), so bf16 is a real speed-up."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def bf16_supported() -> bool:
    """Whether bf16 training makes sense here: a CUDA GPU with bf16, or a CPU that computes it natively."""
    import torch

    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    return cpu_bf16_fast()


def device_report() -> dict[str, Any]:
    import torch

    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return {
            "device": "cuda",
            "name": props.name,
            "count": torch.cuda.device_count(),
            "memory_gib": round(props.total_memory / 2**30, 1),
            "bf16": torch.cuda.is_bf16_supported(),
            "fp16": True,
        }
    ram = _ram_gib()
    return {
        "device": "cpu",
        "name": _cpu_name(),
        "count": os.cpu_count(),
        "memory_gib": round(ram, 1) if ram else None,
        "bf16": cpu_bf16_fast(),
        "fp16": False,  # fp16 autocast training needs CUDA
    }


def environment_report(configured_cache: str | None = None) -> dict[str, Any]:
    import prefkit

    versions = {"python": platform.python_version(), "prefkit": prefkit.__version__}
    for package in ("torch", "transformers", "peft", "accelerate", "datasets", "trl", "bitsandbytes"):
        versions[package] = _version(package)
    cache = cache_dir(configured_cache)
    source = "setting" if configured_cache else (f"${CACHE_ENV}" if os.environ.get(CACHE_ENV) else "default")
    return {"versions": versions, "device": device_report(), "cache_dir": str(cache), "cache_source": source}
