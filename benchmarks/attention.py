"""Attention under a packed-layout mask: prefkit's (``prefkit.model.attention``) against torch's SDPA.

    python benchmarks/attention.py [--rows 3] [--length 254] [--heads 9] [--kv-heads 3] [--dim 64]

The default shape is one layer of the DPO race's packed step on SmolLM2-135M (rows of two pairs, each a
prompt and two replies). Times the forward alone (the reference model's pass) and forward + backward (the
policy's), in bf16, median of 30 after a warm-up, and the error of each against the same attention in
float64. Writes ``benchmarks/results/attention.json``. Take the figure on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from prefkit.env import _cpu_name
from prefkit.model.attention import masked_attention

RESULTS = Path(__file__).parent / "results" / "attention.json"


def packed_mask(length: int, pairs: int) -> torch.Tensor:
    """Block-diagonal pairs; in each, the prompt (first third) is seen by both replies, a reply not by the
    other."""
    size = length // pairs
    mask = torch.zeros(length, length, dtype=torch.bool)
    for start in range(0, size * pairs, size):
        prompt, reply = size // 3, (size - size // 3) // 2
        block = torch.zeros(size, size, dtype=torch.bool)
        block[:, :prompt] = True
        block[prompt : prompt + reply, prompt : prompt + reply] = True
        block[prompt + reply :, prompt + reply :] = True
        mask[start : start + size, start : start + size] = (
            block & torch.ones(size, size, dtype=torch.bool).tril()
        )
    mask[size * pairs :, size * pairs :] = torch.eye(length - size * pairs, dtype=torch.bool)  # padding
    return mask


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """What transformers' sdpa integration runs with a mask: key/value heads repeated, then SDPA."""
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def median_ms(fn, repeats: int = 30) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3)
    parser.add_argument("--length", type=int, default=254)
    parser.add_argument("--heads", type=int, default=9)
    parser.add_argument("--kv-heads", type=int, default=3)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    g = torch.Generator().manual_seed(0)
    shape = (args.rows, args.length)
    q64 = torch.randn(*shape, args.heads, args.dim, generator=g, dtype=torch.float64).transpose(1, 2)
    k64 = torch.randn(args.rows, args.kv_heads, args.length, args.dim, generator=g, dtype=torch.float64)
    v64 = torch.randn_like(k64)
    grad64 = torch.randn_like(q64)
    mask = packed_mask(args.length, args.pairs).expand(args.rows, 1, args.length, args.length)
    scale = args.dim**-0.5

    def leaves(dtype: torch.dtype) -> list[torch.Tensor]:
        return [t.detach().to(dtype).requires_grad_() for t in (q64, k64, v64)]

    def run(fn, inputs: list[torch.Tensor], backward: bool) -> list[torch.Tensor]:
        for t in inputs:
            t.grad = None
        with torch.set_grad_enabled(backward):
            out = fn(*inputs, mask, scale)
        if not backward:
            return [out]
        out.backward(grads[out.dtype])
        return [out, *(t.grad for t in inputs)]

    grads = {dtype: grad64.to(dtype) for dtype in (torch.float64, torch.bfloat16)}
    truth = run(sdpa, leaves(torch.float64), True)
    low = leaves(torch.bfloat16)
    # Warm up both, backward included, before timing either: glibc raises its mmap threshold only after
    # the first large blocks are freed; until then every large tensor is a fresh mapping whose pages fault
    # in on first touch, which a training loop's steady state does not see.
    for _ in range(3):
        for fn in (masked_attention, sdpa):
            run(fn, low, True)
    result: dict = {
        "machine": {"cpu": _cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__},
        "shape": vars(args) | {"output": str(args.output)},
        "command": "python benchmarks/attention.py",
    }
    for name, fn in (("prefkit", masked_attention), ("sdpa", sdpa)):
        errors = [
            round(((r.double() - t).norm() / t.norm()).item(), 5)
            for r, t in zip(run(fn, low, True), truth, strict=True)
        ]
        result[name] = {
            "forward_ms": median_ms(lambda fn=fn: run(fn, low, False)),
            "forward_backward_ms": median_ms(lambda fn=fn: run(fn, low, True)),
            "relative_error_out_dq_dk_dv": errors,
        }
        print(name, json.dumps(result[name]))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
