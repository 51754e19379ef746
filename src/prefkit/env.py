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
# with AVX512-BF16 and no AMX at 0.55x -- where prefkit's DPO race trained 1.6x faster in fp32.
MATMUL_RATES_FILE = "cpu_matmul_rates.json"


def matmul_rates(rounds: int = 5) -> dict[str, float]:
    """This CPU's matmul rates in GFLOP/s, bf16 and fp32: 1024-wide products of 512 rows (the size of a
    small model's projections), the two precisions alternating for ``rounds`` rounds of 3 products after
    a warm-up, each precision's fastest product counted -- what the machine does, not what a busy moment
    lets it do. About 0.3 s in all."""
    import time

    import torch

    operands = {
        name: (torch.randn(512, 1024, dtype=dtype), torch.randn(1024, 1024, dtype=dtype))
        for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32))
    }
    best = dict.fromkeys(operands, float("inf"))
    for round_ in range(rounds + 1):
        for name, (a, b) in operands.items():
            for _ in range(3):
                started = time.perf_counter()
                torch.mm(a, b)
                if round_:  # the first round warms the kernels up
                    best[name] = min(best[name], time.perf_counter() - started)
    return {name: round(2 * 512 * 1024 * 1024 / seconds / 1e9, 1) for name, seconds in best.items()}


def _rates_key() -> str:
    """The CPU, as precisely as the OS says (its name alone is shared by different CPUs in VMs: an Intel
    Xeon with AMX and one without both call themselves "Intel(R) Xeon(R) Processor"), torch, threads."""
    import hashlib

    import torch

    details = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("cpu family", "model\t", "stepping", "flags")):
                details += line + "\n"
            elif not line.strip() and details:
                break  # the first processor's block is enough
    except OSError:
        details = platform.platform()
    digest = hashlib.sha256(details.encode()).hexdigest()[:12]
    return f"{_cpu_name()} [{digest}] | torch {torch.__version__} | {torch.get_num_threads()} threads"


def cpu_matmul_rates(cache: str | os.PathLike | None = None, *, remeasure: bool = False) -> dict[str, float]:
    """:func:`matmul_rates`, measured once per CPU, torch version and thread count and kept in the cache
    folder (:data:`MATMUL_RATES_FILE`); ``remeasure`` measures again."""
    import json
    import math
    import tempfile

    path, key = cache_dir(cache) / MATMUL_RATES_FILE, _rates_key()
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    known = known if isinstance(known, dict) else {}
    rates = known.get(key)
    usable = isinstance(rates, dict) and all(
        isinstance(rates.get(k), float) and math.isfinite(rates[k]) and rates[k] > 0 for k in ("bf16", "fp32")
    )
    if remeasure or not usable:
        rates = known[key] = matmul_rates()
        try:  # a cache that cannot be written costs a measurement next time, nothing else
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, partial = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as out:
                    json.dump(known, out, indent=1)
                os.replace(partial, path)
            finally:
                Path(partial).unlink(missing_ok=True)
        except OSError:
            pass
    return rates


def cpu_bf16_fast(cache: str | os.PathLike | None = None) -> bool:
    """True where bf16 is both native and faster than fp32 on this CPU (:func:`cpu_matmul_rates`): the
    precision prefkit picks when left to choose (the quickstart, ``dtype: auto``)."""
    if not cpu_bf16_native():
        return False
    rates = cpu_matmul_rates(cache)
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
    native = cpu_bf16_native()
    return {
        "device": "cpu",
        "name": _cpu_name(),
        "count": os.cpu_count(),
        "memory_gib": round(ram, 1) if ram else None,
        "bf16": native,
        "bf16_faster_than_fp32": cpu_bf16_fast(),  # what `auto` and the quickstart go by
        "matmul_gflops": cpu_matmul_rates() if native else None,  # measured by cpu_bf16_fast, cached
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
