"""Peak memory and time of SFT training steps on a Gemma 3 270M-shaped model: the Trainer's own loss
(``model(labels=...)``, full logits) against prefkit's (``prefkit.train.sft``: log-probs at labelled
positions, output layer fused with the log-softmax in chunks).

    python benchmarks/sft_memory.py [--layers 18] [--batch 4] [--length 384] [--prompt 0]
        [--dtypes bf16 fp32] [--steps 3] [--part steps|head|all] [--repeats 3]
        [--output benchmarks/results/sft_memory.json]

A randomly initialised ``Gemma3ForCausalLM`` with gemma-3-270m's shape (vocabulary 262,144, width 640,
18 layers, 4 heads of 256 and one key/value head, MLP 2048, sliding window 512 with every sixth layer
global, tied embeddings), LoRA (rank 8, alpha 16) on every linear layer but the output layer, as prefkit's
default ``lora_target: all``. Each run is ``PrefTrainer`` (stage sft) on ``--steps`` optimiser steps of one
batch of ``--batch`` rows of ``--length`` random tokens (the first ``--prompt`` of each unlabelled), in a
fresh process; the old path is the same trainer with ``chunked_sft_applies`` answering no, so the
Trainer's ``model(labels=...)`` runs. bf16: base weights in bf16 and ``bf16: true`` (accelerate's
autocast, as prefkit trains LoRA in bf16); fp32: everything float32.

Memory is the process's resident set size (RSS, which is what a CPU run runs out of), sampled every
millisecond by a thread from the start of the first step to the end of the last (``psutil``); reported as
the peak and as the peak minus the RSS just before the first step (the model, its adapters and the
batch already in memory). Time is per optimiser step, wall clock; the first step (allocations, one-time
set-up) is reported apart from the median of the others, with the median CPU time of the process (all
its threads) beside it: on a shared machine the wall clock also counts other processes' turns. Then
(:func:`head_times`) the output layer and loss alone, old and new alternately. Writes the JSON to
``--output``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "sft_memory.json"
GIB = 2**30

# gemma-3-270m's config.json (google/gemma-3-270m; its GGUF metadata agrees).
GEMMA3_270M = {
    "vocab_size": 262144,
    "hidden_size": 640,
    "intermediate_size": 2048,
    "num_hidden_layers": 18,
    "num_attention_heads": 4,
    "num_key_value_heads": 1,
    "head_dim": 256,
    "query_pre_attn_scalar": 256,
    "sliding_window": 512,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}


class PeakRSS:
    """The largest RSS of this process seen by a sampling thread between :meth:`start` and :meth:`stop`."""

    def __init__(self, interval: float = 0.001) -> None:
        import psutil

        self._process = psutil.Process()
        self._interval = interval
        self._running = False
        self.peak = 0
        self._thread: threading.Thread | None = None

    def rss(self) -> int:
        return self._process.memory_info().rss

    def _sample(self) -> None:
        while self._running:
            self.peak = max(self.peak, self.rss())
            time.sleep(self._interval)

    def start(self) -> None:
        self.peak = self.rss()
        self._running = True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> int:
        self._running = False
        assert self._thread is not None
        self._thread.join()
        self.peak = max(self.peak, self.rss())
        return self.peak


def _model(args: argparse.Namespace, dtype: Any) -> Any:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    layers = args.layers
    config = Gemma3TextConfig(
        **{**GEMMA3_270M, "num_hidden_layers": layers},
        layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(layers)],
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=1,
    )
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config).to(dtype)
    lora = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def _features(args: argparse.Namespace, vocab: int) -> list[dict[str, list[int]]]:
    import torch

    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(args.batch * args.steps):
        ids = torch.randint(6, vocab, (args.length,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": [-100] * args.prompt + ids[args.prompt :]})
    return rows


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """One path and dtype, in this process."""
    import torch
    from transformers import TrainerCallback, TrainingArguments

    from prefkit.data.collate import SFTCollator
    from prefkit.model.training import TrainingModel
    from prefkit.train import trainer as trainer_module

    if args.path == "old":
        # The Trainer's own compute_loss: model(labels=...), the full logits.
        trainer_module.chunked_sft_applies = lambda *_: False
    bf16 = args.dtype == "bf16"
    model = _model(args, torch.bfloat16 if bf16 else torch.float32)
    features = _features(args, model.config.vocab_size)
    sampler = PeakRSS()
    steps: list[float] = []
    cpu: list[float] = []  # CPU seconds of every thread of this process: less at the mercy of other load
    before: list[int] = []  # the RSS just before the first step

    class Clock(TrainerCallback):
        def on_step_begin(self, *_: Any, **__: Any) -> None:
            if not before:
                before.append(sampler.rss())
                sampler.start()
            self.started, self.cpu_started = time.perf_counter(), time.process_time()

        def on_step_end(self, *_: Any, **__: Any) -> None:
            steps.append(time.perf_counter() - self.started)
            cpu.append(time.process_time() - self.cpu_started)

    with tempfile.TemporaryDirectory() as out:
        training = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=args.batch,
            max_steps=args.steps,
            learning_rate=1e-4,
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            bf16=bf16,
            use_cpu=True,
            remove_unused_columns=False,
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        trainer = trainer_module.PrefTrainer(
            stage="sft",
            loaded=TrainingModel(model, None, None, None),
            args=training,
            train_dataset=features,
            data_collator=SFTCollator(0),
            callbacks=[Clock()],
        )
        trainer.train()
    peak = sampler.stop()
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    return {
        "path": args.path,
        "dtype": args.dtype,
        "peak_rss_gib": peak / GIB,
        "rss_before_gib": before[0] / GIB,
        "step_peak_over_before_gib": (peak - before[0]) / GIB,
        "first_step_s": steps[0],
        "step_s": statistics.median(steps[1:]) if len(steps) > 1 else steps[0],
        "steps_s": steps,
        "step_cpu_s": statistics.median(cpu[1:]) if len(cpu) > 1 else cpu[0],
        "steps_cpu_s": cpu,
        "losses": losses,
    }


def head_times(args: argparse.Namespace, dtype_name: str) -> dict[str, Any]:
    """What the two paths do differently -- the output layer and the loss, forward and backward -- alone,
    on random hidden states of the step's shape, old and new alternately ``--repeats`` times after one
    warm-up each: the rest of the step is the same code on both. (Under bf16 the Trainer's path also
    converts the logits to float32 for accelerate, which is left out here.)"""
    import torch
    from transformers.loss.loss_utils import ForCausalLMLoss

    from prefkit.model.logps import CHUNK_ELEMENTS, Targets
    from prefkit.model.output_layer import head_logps

    dtype = torch.bfloat16 if dtype_name == "bf16" else torch.float32
    vocab, width = GEMMA3_270M["vocab_size"], GEMMA3_270M["hidden_size"]
    g = torch.Generator().manual_seed(0)
    weight = (torch.randn(vocab, width, generator=g) * 0.02).to(dtype)  # frozen: the tied embedding
    hidden = torch.randn(args.batch, args.length, width, generator=g).to(dtype)
    labels = torch.randint(0, vocab, (args.batch, args.length), generator=g)
    labels[:, : args.prompt] = -100
    targets = Targets.from_labels(labels)

    def old() -> None:
        h = hidden.clone().requires_grad_()
        ForCausalLMLoss(torch.nn.functional.linear(h, weight), labels, vocab).backward()

    def new() -> None:
        h = hidden.clone().requires_grad_()
        values, _ = head_logps(h[targets.predict], weight, targets.tokens, None, dtype, CHUNK_ELEMENTS)
        (-values.sum() / values.numel()).backward()

    times: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in ("old", "new")}
    for repeat in range(args.repeats + 1):
        for name, fn in (("old", old), ("new", new)):
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            if repeat:  # the first of each is the warm-up
                times[name]["wall"].append(time.perf_counter() - wall)
                times[name]["cpu"].append(time.process_time() - cpu)
    return {
        "dtype": dtype_name,
        **{f"{name}_{kind}_s": statistics.median(t[kind]) for name, t in times.items() for kind in t},
        "all_s": times,
    }


SHAPE_ARGS = ("layers", "batch", "length", "prompt", "steps")


def _child(args: argparse.Namespace, path: str, dtype: str) -> dict[str, Any]:
    """One run in a fresh process: a process's RSS does not fall back once its allocator has grown."""
    command = [sys.executable, __file__, "--path", path, "--dtype", dtype]
    for name in SHAPE_ARGS:
        command += [f"--{name}", str(getattr(args, name))]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{path} {dtype} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _table(args: argparse.Namespace, runs: list[dict[str, Any]]) -> str:
    lines = [
        f"SFT steps, Gemma 3 270M shape ({args.layers} layers), LoRA on every linear layer, batch "
        f"{args.batch} x {args.length} ({args.prompt} prompt tokens), {args.steps} steps",
        "",
        "| dtype | loss path | peak RSS | peak - RSS before | first step | later steps (CPU time) | losses |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        losses = ", ".join(f"{loss:.4f}" for loss in r["losses"])
        lines.append(
            f"| {r['dtype']} | {r['path']} | {r['peak_rss_gib']:.2f} GiB | "
            f"{r['step_peak_over_before_gib']:.2f} GiB | {r['first_step_s']:.1f} s | {r['step_s']:.1f} s "
            f"({r['step_cpu_s']:.1f} s) | "
            f"{losses} |"
        )
    return "\n".join(lines)


def _machine() -> dict[str, Any]:
    import torch
    import transformers

    from prefkit.env import _cpu_name

    return {
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "load_average_at_end": os.getloadavg(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=18)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=384)
    parser.add_argument("--prompt", type=int, default=0, help="unlabelled tokens at the start of each row")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--dtypes", nargs="+", default=["bf16", "fp32"], choices=["bf16", "fp32"])
    parser.add_argument("--part", choices=["steps", "head", "all"], default="all")
    parser.add_argument("--repeats", type=int, default=3, help="timings of the output layer and loss alone")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--path", choices=["old", "new"], help=argparse.SUPPRESS)  # one run, in a child
    parser.add_argument("--dtype", choices=["bf16", "fp32"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.path is not None:
        print(json.dumps(run_one(args)))
        return 0

    runs, heads = [], []
    if args.part in ("steps", "all"):
        for dtype in args.dtypes:
            for path in ("old", "new"):
                runs.append(_child(args, path, dtype))
                print(f"{dtype} {path}: done", file=sys.stderr)
        print(_table(args, runs))
    if args.part in ("head", "all"):
        heads = [head_times(args, dtype) for dtype in args.dtypes]
        print("\n| dtype | output layer + loss, old | new |\n| --- | --- | --- |")
        for h in heads:
            print(
                f"| {h['dtype']} | {h['old_wall_s']:.2f} s ({h['old_cpu_s']:.2f} s CPU) | "
                f"{h['new_wall_s']:.2f} s ({h['new_cpu_s']:.2f} s CPU) |"
            )
    record = {
        "command": "python benchmarks/sft_memory.py " + " ".join(sys.argv[1:]),
        "memory": "process RSS, sampled every 1 ms by a thread (psutil), first step's start to last's end",
        "machine": _machine(),
        "shape": {**GEMMA3_270M, "num_hidden_layers": args.layers},
        **{name: getattr(args, name) for name in SHAPE_ARGS if name != "layers"},
        "runs": runs,
        "output_layer_and_loss": heads,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
