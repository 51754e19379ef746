"""The output layer fused with the log-softmax (``prefkit.model.output_layer``) against its matmuls alone.

    python benchmarks/output_layer.py [--rows 627] [--hidden 576] [--vocab 49152] [--chunk 16777216]
        [--block 524288]

The default shape is one DPO race step's scored positions on SmolLM2-135M in bf16. Times the policy's
pass (forward, with the hidden-state gradient precomputed for the frozen output weight, and backward) and
the reference's (forward, no gradient), median of 7 after a warm-up, each against the vocabulary
projections it must run anyway (two for the policy, one for the reference): what is left is the
softmax's own cost. Also times the path for output layers that cannot be fused (a LoRA-wrapped or
quantised ``lm_head``): the same log-softmax over the model's own logits (``label_logps``), forward and
backward. Writes ``benchmarks/results/output_layer.json``. Take the figure on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from prefkit.env import _cpu_name
from prefkit.model import log_softmax
from prefkit.model.log_softmax import label_logps, row_chunks
from prefkit.model.output_layer import head_logps

sys.path.insert(0, str(Path(__file__).parent))
from attention import median_ms  # one warm-up, then the median

RESULTS = Path(__file__).parent / "results" / "output_layer.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=627)
    parser.add_argument("--hidden", type=int, default=576)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--chunk", type=int, default=2**24)
    parser.add_argument("--block", type=int, default=log_softmax.BLOCK_ELEMENTS)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    log_softmax.BLOCK_ELEMENTS = args.block

    g = torch.Generator().manual_seed(0)
    dtype = torch.bfloat16
    weight = (torch.randn(args.vocab, args.hidden, generator=g) * 0.05).to(dtype)
    hidden = torch.randn(args.rows, args.hidden, generator=g).to(dtype)
    targets = torch.randint(0, args.vocab, (args.rows,), generator=g)

    def policy() -> None:
        h = hidden.clone().requires_grad_()
        values, _ = head_logps(h, weight, targets, None, dtype, args.chunk)
        values.sum().backward()

    def reference() -> None:
        with torch.no_grad():
            head_logps(hidden, weight, targets, None, dtype, args.chunk)

    chunks = [hidden[rows] for rows in row_chunks(args.rows, args.vocab, args.chunk)]
    logits = (hidden @ weight.t()).requires_grad_()

    def logits_path() -> None:
        logits.grad = None
        values, _ = label_logps(logits, targets)
        values.sum().backward()

    def projections(count: int):
        def run() -> None:
            for chunk in chunks:
                logits = chunk @ weight.t()
                if count == 2:
                    logits @ weight

        return run

    result: dict = {
        "machine": {"cpu": _cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__},
        "shape": {k: v for k, v in vars(args).items() if k != "output"},
        "command": "python benchmarks/output_layer.py",
        "policy_ms": median_ms(policy, 7),
        "policy_projections_ms": median_ms(projections(2), 7),
        "reference_ms": median_ms(reference, 7),
        "reference_projection_ms": median_ms(projections(1), 7),
        "logits_path_ms": median_ms(logits_path, 7),
    }
    print(json.dumps(result, indent=1))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
