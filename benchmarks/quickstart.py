"""The quickstart's targets on this machine: total < 5 min, peak memory < 4 GiB, and on the held-out
pairs and prompts: preference accuracy after >= 0.9 and the verdict "improved" for the English and for
the Japanese replies (prefkit.quickstart.recipe.verdict: every guard passes, the style taken up, relevance and
ROUGE-L not down; prefkit.quickstart.recipe.missed_targets).

    python benchmarks/quickstart.py [--warm] [--method METHOD] [--output FILE] [key=value ...]

Runs `prefkit quickstart` as a user would, in a fresh process and (unless --warm) with an empty model
cache, so the GGUF conversion is included. Prints the figures, writes them to ``--output`` (default
``benchmarks/results/quickstart.json``) and exits 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prefkit.env import device_report

LIMITS = {"total_seconds": 300, "peak_memory_gib": 4.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm", action="store_true", help="reuse the model cache (no conversion)")
    parser.add_argument("--method", default=None, help="pref_loss instead of the recipe's")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "quickstart.json")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the recipe")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        if not args.warm:
            env["PREFKIT_CACHE"] = str(Path(tmp) / "cache")
        out = Path(tmp) / "quickstart"
        prefkit = Path(sys.executable).with_name("prefkit")
        started = time.perf_counter()
        method = ["--method", args.method] if args.method else []
        subprocess.run(
            [str(prefkit), "quickstart", "--output-dir", str(out), *method, *args.overrides],
            env=env,
            check=True,
        )
        wall = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        report = json.loads((out / "quickstart_report.json").read_text())

    b, a = report["before"], report["after"]
    figures = {
        "total_seconds": round(wall, 1),
        "train_seconds": report["train_seconds"],
        "steps": report["steps"],
        "peak_memory_gib": round(peak, 2),
        **{f"{k}_before": round(b[k], 3) for k in b},
        **{f"{k}_after": round(a[k], 3) for k in a},
        "style_gain": round(a["style_score"] - b["style_score"], 3),
    }
    text = json.dumps(
        {
            "command": shlex.join(["python", "benchmarks/quickstart.py", *sys.argv[1:]]),
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{device_report()['name']}, {os.cpu_count()} cores, AMX: {_has_amx()}",
            "cold_cache": not args.warm,
            "method": report["method"],
            "bf16": report["bf16"],  # the recipe's choice on this machine (prefkit.env.cpu_bf16_fast)
            "overrides": args.overrides,
            **figures,
            "languages": report["languages"],
            "failed_guards": report["guards"],
            "missed_targets": report["missed_targets"],
            "example": report["example"],
            "replies": [
                {k: r[k] for k in ("prompt", "before", "after", "after_flags")} for r in report["replies"]
            ],
        },
        indent=2,
        ensure_ascii=False,
    )
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n", encoding="utf-8")
    missed = [f"{k} = {figures[k]} (limit {limit})" for k, limit in LIMITS.items() if figures[k] > limit]
    missed += report["missed_targets"]  # accuracy, and each language's verdict
    for target in missed:
        print(f"target missed: {target}", file=sys.stderr)
    return 1 if missed else 0


def _has_amx() -> bool:
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
