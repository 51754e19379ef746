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


def cpu_bf16_native() -> bool:
    """True where the CPU computes bf16 matmuls in hardware (AVX512-BF16 or AMX): bf16 training runs."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


# A CPU that computes bf16 natively is not always faster in it. Measured (docs/performance.md): an AMD EPYC
# with AVX512-BF16 runs bf16 matmuls at 4x its fp32 rate, an Intel Xeon with AMX at 6x, but an Intel Xeon
# with AVX512-BF16 and no AMX at 0.6x -- where prefkit's DPO race trained 1.6x faster in fp32.
MATMUL_RATES_FILE = "cpu_matmul_rates.json"


def matmul_rates() -> dict[str, float]:
    """This CPU's matmul rates in GFLOP/s, bf16 and fp32 (1024-wide products of 512 rows, the size of a
    small model's projections; the median of 8 after a warm-up: about 0.2 s in all)."""
    import time

    import torch

    rates = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        a, b = torch.randn(512, 1024, dtype=dtype), torch.randn(1024, 1024, dtype=dtype)
        seconds = []
        for _ in range(9):
            started = time.perf_counter()
            torch.mm(a, b)
            seconds.append(time.perf_counter() - started)
        rates[name] = round(2 * 512 * 1024 * 1024 / sorted(seconds[1:])[4] / 1e9, 1)
    return rates


def _rates_key() -> str:
    import torch

    return f"{_cpu_name()} | torch {torch.__version__} | {torch.get_num_threads()} threads"


def cpu_bf16_fast(cache: str | os.PathLike | None = None) -> bool:
    """True where bf16 is both native and faster than fp32 on this CPU: the precision prefkit picks when
    left to choose (the quickstart, ``dtype: auto``). The rates are measured once per CPU, torch version
    and thread count, and kept in the cache folder (:data:`MATMUL_RATES_FILE`)."""
    import json

    if not cpu_bf16_native():
        return False
    path, key = cache_dir(cache) / MATMUL_RATES_FILE, _rates_key()
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    known = known if isinstance(known, dict) else {}
    rates = known.get(key)
    if not (isinstance(rates, dict) and all(isinstance(rates.get(k), float) for k in ("bf16", "fp32"))):
        rates = known[key] = matmul_rates()
        try:  # a cache that cannot be written costs a measurement next time, nothing else
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.{os.getpid()}")
            partial.write_text(json.dumps(known, indent=1), encoding="utf-8")
            partial.replace(path)
        except OSError:
            pass
    return rates["bf16"] > rates["fp32"]


def bf16_supported() -> bool:
    """Whether bf16 training runs here: a CUDA GPU with bf16, or a CPU that computes it natively."""
    import torch

    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    return cpu_bf16_native()


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
        "bf16": cpu_bf16_native(),
        "bf16_faster_than_fp32": cpu_bf16_fast(),  # what `auto` and the quickstart go by
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
