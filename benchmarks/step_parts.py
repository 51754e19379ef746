"""Where a training step's wall time goes, by part: the policy's forward, the reference's forward, the
backward and the rest of the step (the loss, the batch's transfer); and the optimizer's step after it.

    python benchmarks/step_parts.py [--method sigmoid] [vs_trl options ...]

Runs prefkit's side of ``benchmarks/vs_trl.py`` (same model, data and settings; any of its options can be
added) with a clock around each part (no profiler, so the times are the step's own). Prints and writes
``benchmarks/results/step_parts.json``: the mean milliseconds per step of each part, over every step after
the race's warm-up steps.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "step_parts.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="sigmoid")
    parser.add_argument("--warmup", type=int, default=2)
    args, race_args = parser.parse_known_args()
    command = " ".join(["python", "benchmarks/step_parts.py", *sys.argv[1:]])

    import accelerate
    import torch
    import transformers

    import prefkit.train.trainer

    sys.path.insert(0, str(Path(__file__).parent))
    import vs_trl

    seconds: dict[str, list[float]] = defaultdict(list)

    def clocked(name: str | Callable[[], str], fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*a: Any, **k: Any) -> Any:
            started = time.perf_counter()
            out = fn(*a, **k)
            seconds[name() if callable(name) else name].append(time.perf_counter() - started)
            return out

        return run

    # The policy's log-probs are taken with gradients, the reference's without.
    part = lambda: "policy forward" if torch.is_grad_enabled() else "reference forward"  # noqa: E731
    prefkit.train.trainer.sequence_logps = clocked(part, prefkit.train.trainer.sequence_logps)
    accelerate.Accelerator.backward = clocked("backward", accelerate.Accelerator.backward)
    torch.optim.AdamW.step = clocked("optimizer", torch.optim.AdamW.step)
    transformers.Trainer.training_step = clocked("step", transformers.Trainer.training_step)
    sys.argv = ["vs_trl.py", "--side", "prefkit", "--method", args.method, *race_args]
    vs_trl.main()

    steps = len(seconds["step"])

    def per_step(name: str) -> float:
        # Each part runs once per step (the reference not at all where the method needs none).
        return round(1000 * sum(seconds[name][args.warmup :]) / (steps - args.warmup), 1)

    parts = {name: per_step(name) for name in seconds}
    inside = ("policy forward", "reference forward", "backward")  # the optimizer runs after the step
    parts["rest of the step"] = round(parts["step"] - sum(parts.get(k, 0.0) for k in inside), 1)
    result = {"command": command, "measured_steps": steps - args.warmup, "milliseconds_per_step": parts}
    print(json.dumps(result, indent=1))
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
