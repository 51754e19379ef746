"""The quickstart's targets on this machine: total < 5 min, peak memory < 4 GiB, held-out preference
accuracy after >= 0.9, style score up by >= 0.3 over the base model.

    python benchmarks/quickstart.py [--warm] [--method simpo]

Runs `prefkit quickstart` as a user would, in a fresh process and (unless --warm) with an empty model
cache, so the GGUF conversion is included. Prints the figures and exits 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"total_seconds": 300, "peak_memory_gib": 4.0, "accuracy_after": 0.9, "style_gain": 0.3}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm", action="store_true", help="reuse the model cache (no conversion)")
    parser.add_argument("--method", default="simpo")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        if not args.warm:
            env["PREFKIT_CACHE"] = str(Path(tmp) / "cache")
        out = Path(tmp) / "quickstart"
        prefkit = Path(sys.executable).with_name("prefkit")
        started = time.perf_counter()
        subprocess.run(
            [str(prefkit), "quickstart", "--output-dir", str(out), "--method", args.method],
            env=env,
            check=True,
        )
        wall = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        report = json.loads((out / "quickstart_report.json").read_text())

    figures = {
        "total_seconds": round(wall, 1),
        "train_seconds": report["train_seconds"],
        "peak_memory_gib": round(peak, 2),
        "accuracy_before": round(report["before"]["preference_accuracy"], 3),
        "accuracy_after": round(report["after"]["preference_accuracy"], 3),
        "style_before": round(report["before"]["style_score"], 3),
        "style_after": round(report["after"]["style_score"], 3),
        "style_gain": round(report["after"]["style_score"] - report["before"]["style_score"], 3),
    }
    print(
        json.dumps(
            {
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                "cold_cache": not args.warm,
                "method": args.method,
                **figures,
            },
            indent=2,
        )
    )
    missed = [
        k
        for k, limit in TARGETS.items()
        if (figures[k] > limit if k in ("total_seconds", "peak_memory_gib") else figures[k] < limit)
    ]
    for k in missed:
        print(f"target missed: {k} = {figures[k]} (target {TARGETS[k]})", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
