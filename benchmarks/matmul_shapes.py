"""How fast this machine runs the DPO race's own matmuls, against the large-matmul ceiling.

    python benchmarks/matmul_shapes.py [--tokens 762] [--precision bf16]

The race's ceiling (``benchmarks/vs_trl.py``) is a 2048 x 2048 matmul. A training step's matmuls are
smaller: SmolLM2-135M's projections (hidden 576, key/value 192, MLP 1536) on one packed batch (3 rows of
254 positions), forward ``x W^T`` and backward ``g W``, the output layer on one chunk, and LoRA's rank-8
factors. This times each (median of 20 after a warm-up) and reports GFLOP/s and the share of the ceiling,
and the FLOP-weighted rate of the base projections of one layer: whether the step's matmuls could run at
the ceiling if nothing else took time. Writes ``benchmarks/results/matmul_shapes.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from vs_trl import matmul_ceiling

RESULTS = Path(__file__).parent / "results" / "matmul_shapes.json"
HIDDEN, KV, MLP, VOCAB_CHUNK, RANK = 576, 192, 1536, 49152, 8


def gflops(m: int, k: int, n: int, dtype: torch.dtype, repeats: int = 20) -> float:
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * m * k * n / statistics.median(times) / 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=762)
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    args = parser.parse_args()
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    t = args.tokens
    # (name, (m, k, n), how many of it one layer's forward runs)
    base = [
        ("q/o projection", (t, HIDDEN, HIDDEN), 2),
        ("k/v projection", (t, HIDDEN, KV), 2),
        ("gate/up projection", (t, HIDDEN, MLP), 2),
        ("down projection", (t, MLP, HIDDEN), 1),
    ]
    others = [
        ("output layer, one chunk of 341 positions", (341, HIDDEN, VOCAB_CHUNK)),
        ("LoRA down, x A^T", (t, HIDDEN, RANK)),
        ("LoRA up, (x A^T) B^T", (t, RANK, HIDDEN)),
    ]
    ceiling = matmul_ceiling("cpu")[args.precision]
    rows, flops, seconds = [], 0.0, 0.0
    for name, (m, k, n), count in base:
        for direction, shape in (("forward", (m, k, n)), ("backward", (m, n, k))):
            rate = gflops(*shape, dtype)
            rows.append({"matmul": f"{name}, {direction}", "shape": shape, "gflops": round(rate, 1)})
            flops += 2 * m * k * n * count
            seconds += 2 * m * k * n * count / (rate * 1e9)
    for name, shape in others:
        rows.append({"matmul": name, "shape": shape, "gflops": round(gflops(*shape, dtype), 1)})
    for row in rows:
        row["share_of_ceiling"] = round(row["gflops"] / ceiling, 2)
        shape = "x".join(map(str, row["shape"]))
        print(f"{row['matmul']:<45} {shape:>16} {row['gflops']:>8} GFLOP/s {row['share_of_ceiling']:>5}")
    layer = round(flops / seconds / 1e9, 1)
    print(f"ceiling {ceiling} GFLOP/s; one layer's base projections, forward and backward: {layer} GFLOP/s "
          f"({layer / ceiling:.2f} of the ceiling)")  # fmt: skip
    result = {
        "command": " ".join(["python", "benchmarks/matmul_shapes.py", *sys.argv[1:]]),
        "precision": args.precision,
        "ceiling_gflops": ceiling,
        "layer_projections_gflops": layer,
        "layer_projections_share_of_ceiling": round(layer / ceiling, 2),
        "matmuls": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
