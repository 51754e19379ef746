"""Where a training step's time goes: prefkit's side of the race under ``torch.profiler``.

    python benchmarks/profile_step.py [--method sigmoid] [--steps 3] [--rows 25] [vs_trl options ...]

Runs prefkit's side of ``benchmarks/vs_trl.py`` (same model, data and settings; any of its options can be
added) and profiles ``--steps`` training steps after two warm-up steps. Prints the operators by self CPU
time, and the share of the step's time in the groups docs/performance.md discusses. Writes
``benchmarks/results/profile_step.json``. The profiler slows the step down; compare shares, not times.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "profile_step.json"

# Self time by kind of operator (these add up to the whole).
KINDS = {
    "matrix multiplies (linear layers, output layer, LoRA)": ("aten::mm", "aten::addmm"),
    "batched matrix multiplies (attention)": ("aten::bmm",),
    "SDPA kernels": ("scaled_dot_product",),
    "copies and casts": ("aten::copy_",),
    "softmax": ("aten::_softmax",),
}
# Time inside prefkit's pieces, their operators included (these overlap the kinds above).
PIECES = {
    "attention, forward and backward": ("_MaskedAttention", "_MaskedAttentionBackward"),
    "output layer + log-softmax, forward and backward": ("_HeadLogps", "_HeadLogpsBackward"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="sigmoid")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rows", type=int, default=25)
    args, race_args = parser.parse_known_args()
    command = " ".join(["python", "benchmarks/profile_step.py", *sys.argv[1:]])

    import transformers
    from torch.profiler import ProfilerActivity, profile

    sys.path.insert(0, str(Path(__file__).parent))
    import vs_trl

    first, last = 3, 2 + args.steps
    state: dict = {"step": 0, "profiler": None, "summary": None}
    train_step = transformers.Trainer.training_step

    def profiled_step(self, *a, **k):
        state["step"] += 1
        if state["step"] == first:
            state["profiler"] = profile(activities=[ProfilerActivity.CPU])
            state["profiler"].__enter__()
        out = train_step(self, *a, **k)
        if state["step"] == last:
            state["profiler"].__exit__(None, None, None)
            state["summary"] = state["profiler"].key_averages()
        return out

    transformers.Trainer.training_step = profiled_step
    sys.argv = [
        "vs_trl.py",
        "--side",
        "prefkit",
        "--method",
        args.method,
        "--steps",
        str(last + 1),
        *race_args,
    ]
    vs_trl.main()

    events = state["summary"]
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    total = sum(e.self_cpu_time_total for e in events)
    kinds = {
        kind: round(sum(e.self_cpu_time_total for e in events if any(f in e.key for f in names)) / total, 3)
        for kind, names in KINDS.items()
    }
    kinds["everything else"] = round(1 - sum(kinds.values()), 3)
    pieces = {
        piece: round(sum(e.cpu_time_total for e in events if e.key in names) / total, 3)
        for piece, names in PIECES.items()
    }
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[: args.rows]
    result = {
        "command": command,
        "profiled_steps": args.steps,
        "self_cpu_seconds_per_step": round(total / 1e6 / args.steps, 3),
        "share_by_kind": kinds,
        "share_inside": pieces,
        "top": [
            {"op": e.key, "share": round(e.self_cpu_time_total / total, 3), "calls": e.count} for e in top
        ],
    }
    print(json.dumps({"share_by_kind": kinds, "share_inside": pieces}, indent=1))
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
