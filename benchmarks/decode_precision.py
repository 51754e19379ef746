"""Greedy generation speed in bf16 and in fp32 on this machine: SmolLM2-135M-Instruct decoding 64 new
tokens for a batch of 1 and of 8 prompts, the two precisions alternating, the median of 3 each.

`prefkit.env.cpu_bf16_fast` picks the precision by the matmul rates a training step runs at; a
batch-1 decode is a different workload (one position at a time, reading every weight), so this
measures what `dtype: auto` costs or gains for chat and generation. Prints one line per batch size
and writes ``benchmarks/results/decode_precision.json``.

    python benchmarks/decode_precision.py
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

from prefkit.env import cache_dir, device_report
from prefkit.model.loader import load_causal_lm, load_tokenizer
from prefkit.model.sources import resolve_model

PROMPTS = ["How do outliers affect the mean?", "What is model quantization? Explain it to a student."]
NEW_TOKENS = 64
RESULTS = Path(__file__).parent / "results" / "decode_precision.json"


def main() -> None:
    path = resolve_model("smollm2-135m-instruct", cache_dir())
    tokenizer = load_tokenizer(path)
    tokenizer.padding_side = "left"
    models = {
        name: load_causal_lm(path, dtype=dtype).eval()
        for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32))
    }
    results = []
    for batch in (1, 8):
        inputs = tokenizer((PROMPTS * batch)[:batch], return_tensors="pt", padding=True)
        seconds: dict[str, list[float]] = {name: [] for name in models}
        for _ in range(3):
            for name, model in models.items():
                started = time.perf_counter()
                with torch.no_grad():
                    model.generate(
                        **inputs,
                        max_new_tokens=NEW_TOKENS,
                        min_new_tokens=NEW_TOKENS,
                        do_sample=False,
                        pad_token_id=tokenizer.pad_token_id,
                    )
                seconds[name].append(time.perf_counter() - started)
        rates = {name: round(NEW_TOKENS * batch / statistics.median(s), 1) for name, s in seconds.items()}
        print(f"batch {batch}: " + ", ".join(f"{name} {rate} tokens/s" for name, rate in rates.items()))
        results.append({"batch": batch, "tokens_per_second": rates})
    record = {
        "command": "python benchmarks/decode_precision.py",
        "date": time.strftime("%Y-%m-%d"),
        "machine": device_report(),
        "torch": torch.__version__,
        "new_tokens": NEW_TOKENS,
        "results": results,
    }
    RESULTS.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
