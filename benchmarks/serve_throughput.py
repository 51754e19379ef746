"""`prefkit serve` throughput: total generated tokens per second with 1 client vs 8 concurrent clients.

    python benchmarks/serve_throughput.py [--model smollm2-135m-instruct] [--clients 8] [--requests 3]

Starts a real server on loopback (``--max-batch`` = clients), warms it up, then runs two phases with the
same requests (64 new tokens each, greedy, ``ignore_eos`` so every reply has the same length):

1. one client sending its requests one after another;
2. ``--clients`` clients at once, each sending ``--requests`` requests one after another.

Prints and writes ``benchmarks/results/serve_throughput.json``; exits 1 if the concurrent total is under
``--target`` (3x) times the single client's. Take the figure on a quiet machine: other processes on
the CPU distort both phases.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
import urllib.request
from pathlib import Path

from prefkit.env import _cpu_name
from prefkit.serve.process import ServerProcess

PROMPTS = [
    "What is programmatic advertising?",
    "Explain gradient descent to a beginner.",
    "Why are Python tuples immutable?",
    "What does a data scientist do all day?",
    "How does real-time bidding work?",
    "What is overfitting, and how can I notice it?",
    "機械学習とは何ですか？",
    "What is the difference between a list and a set?",
]


def _complete(url: str, prompt: str, max_tokens: int) -> int:
    body = json.dumps(
        {
            "model": "bench",
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "ignore_eos": True,
        }
    ).encode()
    request = urllib.request.Request(
        url + "/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.loads(response.read())["usage"]["completion_tokens"]


def _phase(url: str, clients: int, requests: int, max_tokens: int) -> dict[str, float]:
    tokens = [0] * clients
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            for r in range(requests):
                tokens[i] += _complete(url, PROMPTS[(i + r) % len(PROMPTS)], max_tokens)
        except BaseException as err:  # reported below, not swallowed
            errors.append(err)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed: {errors[0]!r}")
    total = sum(tokens)
    return {
        "clients": clients,
        "requests": clients * requests,
        "tokens": total,
        "seconds": round(seconds, 2),
        "tokens_per_second": round(total / seconds, 2),
    }


LOAD_BEFORE = os.getloadavg()[0]  # another busy process on the CPU distorts both phases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=3, help="requests per client in each phase")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, help="the server's CPU threads (default: one per core)")
    parser.add_argument("--target", type=float, default=3.0)
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).parent / "results" / "serve_throughput.json"
    )
    args = parser.parse_args()

    server_args = [
        "--model",
        args.model,
        "--served-model-name",
        "bench",
        "--max-batch",
        str(args.clients),
        "--dtype",
        args.dtype,
        "--log-level",
        "warning",
    ]
    if args.threads:
        server_args += ["--threads", str(args.threads)]
    with ServerProcess(server_args) as server:
        _phase(server.url, 2, 1, 8)  # warm-up: first forward passes, allocator
        single = _phase(server.url, 1, args.requests, args.max_tokens)
        concurrent = _phase(server.url, args.clients, args.requests, args.max_tokens)
    ratio = concurrent["tokens_per_second"] / single["tokens_per_second"]
    result = {
        "command": "python benchmarks/serve_throughput.py " + " ".join(sys.argv[1:]),
        "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
        "model": args.model,
        "dtype": args.dtype,
        "threads": args.threads or "default (one per core)",
        "load_average_before": LOAD_BEFORE,
        "max_tokens": args.max_tokens,
        "single_client": single,
        "concurrent": concurrent,
        "ratio": round(ratio, 2),
        "target": args.target,
        "passed": ratio >= args.target,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
