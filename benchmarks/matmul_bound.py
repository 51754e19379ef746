"""How close to the matmul ceiling prefkit's step could get if nothing but its matmuls took time.

    python benchmarks/matmul_bound.py [--method sigmoid] [--clocked 5] [--recorded 5] [vs_trl options ...]

Runs prefkit's side of ``benchmarks/vs_trl.py`` (same model, data and settings; any of its options can be
added). After the race's two warm-up steps it clocks ``--clocked`` training steps as they run, then records
every matrix multiply of the next ``--recorded`` steps (forward and backward, policy and reference, the
output layer and LoRA; the attention's batched ones too) with its shapes, strides and dtype, and replays
exactly those matmuls on fresh tensors, nothing else, in their order, timing the whole replay (median of
five). Per computed token, the race's FLOPs (``FLOPS_PER_TOKEN`` x N) over the clocked step time is the
race's ceiling fraction; over the replayed matmul time it is the bound: the fraction the race would report
if the attention's softmax, norms, activations, casts, autograd and Python took no time at all. The
replay reuses one input per shape, warm in the caches, so the bound is if anything too high.

Each shape's matmuls are also timed as a group with all of torch's threads and with one: a speed-up near 1
is a shape the matmul library runs on one core however many it has. The weight of the slowest such shape
is then timed against 256 to 2048 positions, to show where the library starts using every core.

CPU only. Prints the bound and the matmuls by shape; writes ``benchmarks/results/matmul_bound.json``
(``--output`` to change).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "matmul_bound.json"
Spec = tuple[tuple[tuple[int, ...], tuple[int, ...], Any], ...]  # each operand's shape, strides, dtype


def matmul_flops(shapes: list[tuple[int, ...]]) -> int:
    """2mkn per product: ``mm(a, b)``, ``addmm(c, a, b)``, ``bmm(a, b)``, ``baddbmm(c, a, b)``."""
    a, b = shapes[-2:]
    batch = a[0] if len(a) == 3 else 1
    return 2 * batch * a[-2] * a[-1] * b[-1]


def operand(shape: tuple[int, ...], stride: tuple[int, ...], _: object) -> str:
    """``MxK``, with ``T`` where the operand is a transposed view (its rows are strided): how the weights
    of ``x W^T`` and of the backward's ``g W`` arrive."""
    transposed = len(shape) >= 2 and stride[-2] == 1 and shape[-2] > 1 and shape[-1] > 1
    return "x".join(map(str, shape)) + ("T" if transposed else "")


def shape_key(func: Any, tensors: Spec) -> str:
    return f"{func.overloadpacket.__name__} {' @ '.join(operand(*t) for t in tensors[-2:])}"


def operand_like(spec: tuple[tuple[int, ...], tuple[int, ...], Any]) -> Any:
    """A tensor of the recorded shape, strides (an expanded operand's zero strides too) and dtype."""
    import torch

    shape, stride, dtype = spec
    span = 0 if 0 in shape else 1 + sum((size - 1) * step for size, step in zip(shape, stride, strict=True))
    return torch.empty(span, dtype=dtype).uniform_(-1, 1).as_strided(shape, stride)


def timed(calls: list[tuple[Any, list[Any]]]) -> float:
    started = time.perf_counter()
    for func, operands in calls:
        func(*operands)
    return time.perf_counter() - started


def every_thread_and_one(
    calls: list[tuple[Any, list[Any]]], repeats: int, warmups: int = 0
) -> tuple[float, float]:
    """Median seconds of ``calls`` with all of torch's threads, and with one (restored after)."""
    import torch

    threads, seconds = torch.get_num_threads(), []
    try:
        for count in (threads, 1):
            torch.set_num_threads(count)
            for _ in range(warmups):
                timed(calls)
            seconds.append(statistics.median(timed(calls) for _ in range(repeats)))
    finally:
        torch.set_num_threads(threads)
    return seconds[0], seconds[1]


def positions_scan(
    weight: tuple[tuple[int, ...], tuple[int, ...], Any], ceiling: float
) -> list[dict[str, Any]]:
    """One product ``(positions, K) @ weight`` as positions grow: its share of the ceiling with every
    thread, and how much faster that is than one thread (where the matmul library starts using them)."""
    import torch

    b = operand_like(weight)
    rows = []
    for positions in range(256, 2049, 128):
        a = torch.empty(positions, b.shape[0], dtype=b.dtype).uniform_(-1, 1)
        every, one = every_thread_and_one([(torch.mm, [a, b])], repeats=9, warmups=1)
        rate = 2 * positions * b.shape[0] * b.shape[1] / every / 1e9
        rows.append(
            {
                "positions": positions,
                "share_of_ceiling": round(rate / ceiling, 2),
                "speedup_over_one_thread": round(one / every, 2),
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="sigmoid")
    parser.add_argument("--clocked", type=int, default=5)
    parser.add_argument("--recorded", type=int, default=5)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args, race_args = parser.parse_known_args()
    for option in ("--steps", "--warmup", "--grad-acc"):  # this script sets the steps and their order
        if any(a == option or a.startswith(option + "=") for a in race_args):
            parser.error(f"{option}: the bound sets the race's steps itself (--clocked, --recorded)")
    command = " ".join(["python", "benchmarks/matmul_bound.py", *sys.argv[1:]])

    import torch
    import transformers
    from torch.utils._python_dispatch import TorchDispatchMode

    if torch.cuda.is_available():
        print("matmul_bound.py replays on a CPU; on a GPU, read the race's own figures", file=sys.stderr)
        return 2

    sys.path.insert(0, str(Path(__file__).parent))
    import vs_trl

    aten = torch.ops.aten
    products = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default}
    recorded: list[tuple[Any, Spec]] = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in products:
                tensors = tuple(
                    (tuple(t.shape), t.stride(), t.dtype) for t in args if isinstance(t, torch.Tensor)
                )
                recorded.append((func, tensors))
            return func(*args, **(kwargs or {}))

    race = vs_trl.race_arguments(race_args)
    warmup = race.warmup
    first_recorded = warmup + args.clocked + 1
    last = first_recorded + args.recorded - 1
    state: dict[str, Any] = {"step": 0, "clocked_seconds": 0.0}
    train_step = transformers.Trainer.training_step

    def step(self: Any, *a: Any, **k: Any) -> Any:
        state["step"] += 1
        n = state["step"]
        if first_recorded <= n <= last:
            with Record():
                return train_step(self, *a, **k)
        started = time.perf_counter()
        out = train_step(self, *a, **k)
        if n > warmup:
            state["clocked_seconds"] += time.perf_counter() - started
        return out

    transformers.Trainer.training_step = step
    sys.argv = ["vs_trl.py", "--side", "prefkit", "--method", args.method, "--steps", str(last), *race_args]
    vs_trl.main()

    clock = vs_trl.CLOCKS["prefkit"]
    clocked_tokens = clock.step_tokens("computed", warmup + 1, first_recorded - 1)
    recorded_tokens = clock.step_tokens("computed", first_recorded, last)

    inputs = {spec: operand_like(spec) for _, tensors in recorded for spec in tensors}
    calls = [(func, [inputs[spec] for spec in tensors]) for func, tensors in recorded]

    timed(calls)  # warm-up
    replay_seconds = statistics.median(timed(calls) for _ in range(5))

    # Each shape's calls timed as a group (median of three passes), with every thread and with one: how
    # much the second core (or the rest) gives each shape.
    groups: dict[str, list[int]] = defaultdict(list)
    for index, (func, tensors) in enumerate(recorded):
        groups[shape_key(func, tensors)].append(index)
    by_shape: dict[str, dict[str, float]] = {}
    for key, indices in groups.items():
        every, one = every_thread_and_one([calls[i] for i in indices], repeats=3)
        flops = sum(matmul_flops([t[0] for t in recorded[i][1]]) for i in indices)
        by_shape[key] = {"calls": len(indices), "flops": flops, "seconds": every, "one": one}
    one_core = {key for key, e in by_shape.items() if e["one"] / e["seconds"] < 1.2}

    ceiling = vs_trl.matmul_ceiling("cpu")[race.precision]
    nominal = vs_trl.FLOPS_PER_TOKEN[args.method] * vs_trl.parameters(race.model)
    matmul_total = sum(e["flops"] for e in by_shape.values())
    race_fraction = nominal * clocked_tokens / state["clocked_seconds"] / (ceiling * 1e9)
    bound = nominal * recorded_tokens / replay_seconds / (ceiling * 1e9)
    shapes = sorted(by_shape.items(), key=lambda kv: -kv[1]["seconds"])
    rows = [
        {
            "matmul": key,
            "calls_per_step": round(e["calls"] / args.recorded, 1),
            "ms_per_step": round(1000 * e["seconds"] / args.recorded, 2),
            "gflops": round(e["flops"] / e["seconds"] / 1e9, 1),
            "share_of_ceiling": round(e["flops"] / e["seconds"] / 1e9 / ceiling, 2),
            "speedup_over_one_thread": round(e["one"] / e["seconds"], 2),
        }
        for key, e in shapes
    ]
    result = {
        "command": command,
        "ceiling_gflops": ceiling,
        "clocked_steps": args.clocked,
        "clocked_seconds_per_step": round(state["clocked_seconds"] / args.clocked, 3),
        "race_ceiling_fraction": round(race_fraction, 3),
        "recorded_steps": args.recorded,
        "matmuls_per_step": round(len(recorded) / args.recorded, 1),
        "matmul_seconds_per_step": round(replay_seconds / args.recorded, 3),
        "matmul_gflops": round(matmul_total / replay_seconds / 1e9, 1),
        "matmul_share_of_ceiling": round(matmul_total / replay_seconds / 1e9 / ceiling, 3),
        "bound_ceiling_fraction": round(bound, 3),
        # Shapes that run less than 1.2x faster on every thread than on one, as a share of the matmul time.
        "one_core_share_of_matmul_time": round(
            sum(by_shape[key]["seconds"] for key in one_core) / sum(e["seconds"] for e in by_shape.values()),
            3,
        ),
        "matmuls_by_shape": rows,
    }
    # The weight of the one-core product (not batched) that takes longest, at other numbers of positions.
    products_2d = [key for key in one_core if len(recorded[groups[key][0]][1][-1][0]) == 2]
    if products_2d:
        slowest = max(products_2d, key=lambda key: by_shape[key]["seconds"])
        weight = recorded[groups[slowest][0]][1][-1]
        result["positions_scan"] = {"weight": operand(*weight), "rows": positions_scan(weight, ceiling)}
        print(f"{slowest} at other numbers of positions:", result["positions_scan"]["rows"])
    for row in rows[:15]:
        print(f"{row['matmul']:<40} {row['calls_per_step']:>6} calls {row['ms_per_step']:>8} ms "
              f"{row['gflops']:>8} GFLOP/s {row['share_of_ceiling']:>5} "
              f"x{row['speedup_over_one_thread']} over one thread")  # fmt: skip
    print(
        json.dumps(
            {k: v for k, v in result.items() if k not in ("matmuls_by_shape", "positions_scan")}, indent=1
        )
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
