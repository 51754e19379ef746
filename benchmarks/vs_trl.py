"""prefkit against TRL 1.16 on identical work, each side in its own fresh process.

    python benchmarks/vs_trl.py [--model smollm2-135m-instruct] [--data builtin:tutor_train]
                                [--methods sigmoid,simpo,orpo] [--steps 12] [--warmup 2]
                                [--batch 4] [--grad-acc 1] [--cutoff 160] [--length TOKENS]
                                [--template NAME] [--precision bf16|fp32]
                                [--prefkit-set KEY=VALUE ...] [--prefkit-without SPEEDUP ...]

Both sides train the same model with LoRA on every linear layer (rank 8, alpha 16, no dropout), on the
same pairs rendered with the model's chat template, with the same batch, precision, learning rate,
steps and seed: DPO (sigmoid) against ``DPOTrainer``, SimPO against
``CPOTrainer(loss_type="simpo", cpo_alpha=0)``, ORPO against ``ORPOTrainer``. Per side: trained
tokens per second and seconds per step (after ``--warmup`` steps), peak memory (resident set on a
CPU, allocated CUDA memory on a GPU), the step-1 loss. It also measures this machine's bf16 and fp32
matmul throughput and reports prefkit's tokens/s as a fraction of the ceiling that FLOPs per token
imply (LoRA: policy forward + input gradients about 4N, a reference forward 2N more; N = parameters).

"Trained tokens" are counted the same way on both sides: the non-padding tokens of prompt + chosen and
prompt + rejected of every pair trained on (what a padded batch holds). Where prefkit computes fewer
(a shared prompt computed once), ``computed_tokens_per_second`` says so and the ceiling fraction uses it.

``--length N`` races on pairs N tokens long rather than the bundled pairs' ~100: each pair's question is
lengthened with text from the other pairs put before it, to just under N tokens of prompt + longer reply in
the model's chat template, and ``--cutoff`` becomes N, so neither side truncates (their truncation rules
differ) and both train the same sequences -- e.g. ``--length 1024`` for the race on a GPU.

``--template NAME`` renders the pairs with prefkit's named chat template on both sides (prefkit's
``template:``; TRL's tokenizer given the same Jinja text), for a model whose tokenizer has none, such as the
pretrained gemma3-270m (``--template gemma``).

``--prefkit-set`` overrides prefkit's config (``batch_layout=padded``: TRL's layout); ``--prefkit-without``
turns one of prefkit's speed-ups off (``fused_output_layer``, ``lean_lora``, ``lean_attention``) to see
what it contributes.

Writes ``benchmarks/results/<device>-<date>.json``; prints a table. A benchmark, not a test: run it on a
quiet machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

RESULTS = Path(__file__).parent / "results"
# Each side's StepClock, for benchmarks that run a side in their own process (matmul_bound.py).
CLOCKS: dict[str, StepClock] = {}
FLOPS_PER_TOKEN = {"sigmoid": 6, "simpo": 4, "orpo": 4}  # x N, with LoRA (no weight gradients of the base)


# ------------------------------------------------------------------------------------------ machine
def matmul_ceiling(device: str, size: int = 2048, seconds: float = 3.0) -> dict[str, float]:
    """GFLOP/s of a large square matmul in bf16 and fp32: the most this device's math units give."""
    import torch

    out = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        a = torch.randn(size, size, dtype=dtype, device=device)
        b = torch.randn(size, size, dtype=dtype, device=device)
        for _ in range(3):
            a @ b  # warm-up: thread pools, kernel selection
        _sync(device)
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            a @ b
            count += 1
            _sync(device)
        out[name] = round(2 * size**3 * count / (time.perf_counter() - started) / 1e9, 1)
    return out


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def machine() -> dict[str, Any]:
    import torch

    from prefkit.env import device_report

    report = device_report()
    return {
        "device": report["device"],
        "name": report["name"],
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


# --------------------------------------------------------------------------------------- one side
class StepClock:
    """A TrainerCallback that timestamps every optimiser step, reads the step-1 loss and keeps the tokens
    of each batch the collator makes while training (``add``, in order) with how many batches each step
    trained, so that a step's tokens are those of its own batches. (Reading what the collator has counted
    when a step ends would not do: accelerate's loader collates one batch ahead.) Batches collated before
    training -- a reference pre-pass -- are not counted."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        clock = self

        class _Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                clock.training = True
                clock.marks.append(time.perf_counter())

            def on_substep_end(self, args, state, control, **kwargs):
                clock.micro_batches += 1  # a micro-batch of gradient accumulation, not the step's last

            def on_step_end(self, args, state, control, **kwargs):
                clock.batches_per_step.append(clock.micro_batches + 1)
                clock.micro_batches = 0
                clock.marks.append(time.perf_counter())

            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "loss" in logs and clock.first_loss is None:
                    clock.first_loss = float(logs["loss"])

        self.counted: dict[str, list[int]] = {"tokens": [], "computed": []}
        self.training = False
        self.micro_batches = 0
        self.batches_per_step: list[int] = []
        self.marks: list[float] = []
        self.first_loss: float | None = None
        self.callback = _Callback()

    def add(self, tokens: int, computed: int) -> None:
        if self.training:
            self.counted["tokens"].append(tokens)
            self.counted["computed"].append(computed)

    def step_tokens(self, kind: str, first: int, last: int) -> int:
        """The ``kind`` ("tokens" or "computed") of steps ``first`` to ``last`` (from 1, inclusive)."""
        start, end = sum(self.batches_per_step[: first - 1]), sum(self.batches_per_step[:last])
        if end > len(self.counted[kind]):
            raise RuntimeError(
                f"steps {first}-{last} trained {end - start} batches, but {len(self.counted[kind]) - start} "
                "were counted: batches collated in other processes (dataloader_num_workers) go uncounted"
            )
        return sum(self.counted[kind][start:end])

    def summary(self, warmup: int) -> dict[str, Any]:
        seconds = [t1 - t0 for t0, t1 in itertools.pairwise(self.marks)][warmup:]
        first, last = warmup + 1, warmup + len(seconds)
        return {
            "measured_steps": len(seconds),
            "seconds_per_step": round(statistics.median(seconds), 3),
            "tokens_per_second": round(self.step_tokens("tokens", first, last) / sum(seconds), 1),
            "computed_tokens_per_second": round(self.step_tokens("computed", first, last) / sum(seconds), 1),
            "step1_loss": self.first_loss,
        }


def peak_memory_gib(device: str) -> float:
    if device == "cuda":
        import torch

        return round(torch.cuda.max_memory_allocated() / 2**30, 3)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 2**20, 3)
    import psutil

    return round(psutil.Process().memory_info().rss / 2**30, 3)


def _conversational(data: str) -> list[dict[str, Any]]:
    """The pairs as chat messages, so TRL applies the chat template exactly as prefkit does."""
    from prefkit.data.formats import parse_file

    rows = []
    for example in parse_file(data, stage="dpo").examples:
        rows.append(
            {
                "prompt": [m.to_dict() for m in example.prompt],
                "chosen": [{"role": "assistant", "content": example.chosen}],
                "rejected": [{"role": "assistant", "content": example.rejected}],
            }
        )
    return rows


# Tokens left free under --length: the two sides tokenise a conversation a little differently (prefkit cuts it
# at the reply, TRL renders it whole), and a pair either side had to truncate would not be the same work.
LENGTH_MARGIN = 8


def lengthened_pairs(
    data: str, tokenizer: Any, length: int, limit: int | None = None, template: str | None = None
) -> list[dict[str, Any]]:
    """The first ``limit`` (default: all) pairs of ``data`` as prompt-chat records whose prompt + longer
    reply is at most ``length`` - LENGTH_MARGIN tokens in the chat template, and as close to it as a cut of
    the context allows: text from the pairs (every question and chosen reply, repeated as needed) is put
    before each pair's last user turn as context, cut to the longest prefix that fits (a binary search on
    its characters, each length measured with prefkit's own encoder). A pair already too long without
    context is left out. ``template``: a named template, as ``template:`` takes it (None: the tokenizer's)."""
    from prefkit.data.examples import Message
    from prefkit.data.formats import parse_file
    from prefkit.data.tokenize import ChatEncoder

    examples = parse_file(data, stage="dpo").examples
    encoder = ChatEncoder(tokenizer, template, cutoff_len=10**9)  # measure the whole pair, never truncate it
    budget = length - LENGTH_MARGIN
    filler = " ".join(f"{e.prompt[-1].content} {e.chosen}" for e in examples)
    while len(tokenizer(filler, add_special_tokens=False)["input_ids"]) < length:
        filler = f"{filler} {filler}"

    def with_context(example: Any, chars: int) -> Any:
        *before, last = example.prompt
        question = Message(last.role, f"{filler[:chars]}\n\n{last.content}" if chars else last.content)
        return dataclasses.replace(example, prompt=(*before, question))

    def tokens(example: Any) -> int:
        encoded = encoder.encode_pair(example)
        return encoded.full_prompt_len + max(encoded.full_chosen_len, encoded.full_rejected_len)

    rows: list[dict[str, Any]] = []
    for example in examples:
        if limit is not None and len(rows) == limit:
            break
        if tokens(example) > budget:
            continue
        # Invariant: with `fits` characters of context the pair fits; with `too_long` it does not (or there
        # are not that many).
        fits, too_long = 0, len(filler) + 1
        while too_long - fits > 1:
            middle = (fits + too_long) // 2
            if tokens(with_context(example, middle)) <= budget:
                fits = middle
            else:
                too_long = middle
        long = with_context(example, fits)
        rows.append(
            {
                "prompt": [m.to_dict() for m in long.prompt],
                "chosen": long.chosen,
                "rejected": long.rejected,
            }
        )
    if not rows:
        raise SystemExit(f"--length {length}: every pair of {data} is longer than that on its own")
    return rows


def write_lengthened_pairs(args: argparse.Namespace, folder: Path) -> Path:
    """``args.data`` lengthened to ``args.length`` tokens (lengthened_pairs), written as JSONL in ``folder``:
    as many pairs as the race trains on (each ~16 encodings to fit: 0.08 s a pair on a 2-core CPU)."""
    from prefkit.env import cache_dir
    from prefkit.model.loader import load_tokenizer
    from prefkit.model.sources import resolve_first

    tokenizer = load_tokenizer(resolve_first(args.model, cache_dir()))
    pairs = args.steps * args.batch * args.grad_acc
    rows = lengthened_pairs(args.data, tokenizer, args.length, limit=pairs, template=args.template)
    path = folder / f"pairs-{args.length}.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def run_prefkit(args: argparse.Namespace, model_dir: str, out: Path) -> dict[str, Any]:
    import prefkit.train.recipe as train_module
    from prefkit.config import load_config
    from prefkit.data.collate import NUM_TOKENS, pair_tokens

    clock = CLOCKS["prefkit"] = StepClock()
    make_collator = train_module.preference_collator

    def counting_collator(*args: Any, **kwargs: Any) -> Any:
        """The collator the run would use (its batch_layout), counting what passes by: trained tokens as
        in the padded layout (each reply with its own prompt, as TRL trains them), and the positions
        actually computed (the padded layout's mask; a shared-prompt row's real tokens)."""
        inner = make_collator(*args, **kwargs)

        def collate(features: list[dict[str, Any]]) -> dict[str, Any]:
            batch = inner(features)
            if batch["attention_mask"].dim() == 2:
                computed = int(batch["attention_mask"].sum())
            else:
                computed = sum(pair_tokens(f) for f in features)
            clock.add(int(batch[NUM_TOKENS]), computed)
            return batch

        return collate

    train_module.preference_collator = counting_collator  # instrumentation only
    _turn_off(args.prefkit_without)
    config = load_config(
        None,
        [
            f"model_name_or_path={model_dir}",
            f"train_file={args.data}",
            *([f"template={args.template}"] if args.template else []),
            f"output_dir={out}",
            "stage=dpo",
            f"pref_loss={args.method}",
            f"lora_rank={args.lora_rank}",
            f"lora_alpha={2 * args.lora_rank}",
            "lora_target=all",
            f"cutoff_len={args.cutoff}",
            f"per_device_train_batch_size={args.batch}",
            f"gradient_accumulation_steps={args.grad_acc}",
            f"learning_rate={args.lr}",
            "lr_scheduler_type=constant",
            f"max_steps={args.steps}",
            "logging_steps=1",
            "save_steps=100000",
            "plot_loss=false",
            f"seed={args.seed}",
            f"bf16={str(args.precision == 'bf16').lower()}",
            *_method_overrides(args.method),
            *args.prefkit_set,
        ],
    )
    train_module.train(config, callbacks=[clock.callback])
    return clock.summary(args.warmup)


# What each of prefkit's speed-ups contributes (--prefkit-without): the function that turns it on, made a
# no-op for this process.
SPEEDUPS = {
    "fused_output_layer": ("prefkit.model.logps", "plain_output_layer", lambda model: None),
    "lean_lora": ("prefkit.model.training", "use_lean_lora_forward", lambda model: 0),
    "lean_attention": ("prefkit.model.attention", "use_lean_attention", lambda model: False),
}


def _turn_off(names: list[str]) -> None:
    import importlib

    for name in names:
        module, attribute, off = SPEEDUPS[name]
        target = importlib.import_module(module)
        if not hasattr(target, attribute):  # a speed-up moved: say so, never measure nothing
            raise SystemExit(f"--prefkit-without {name}: {module} has no {attribute}")
        setattr(target, attribute, off)


def _method_overrides(method: str) -> list[str]:
    # The same values TRL's configs get below.
    return {
        "sigmoid": ["pref_beta=0.1"],
        "simpo": ["pref_beta=2.0", "simpo_gamma=0.5"],
        "orpo": ["pref_beta=0.1"],
    }[method]


def _keep_template_ending(module: Any) -> None:
    """The same tokens on both sides. TRL's CPO and ORPO trainers append an EOS to every reply that does not
    end in one; a ChatML reply ends in "<|im_end|>\\n" (the template's newline), so they train one more
    token per reply -- an EOS after the newline, which neither the chat template nor prefkit has. Its
    log-prob is large and negative, so it moves the loss (ORPO's NLL term by ~0.7 on these short replies).
    Replies whose template already closed the turn (EOS among their last two tokens) are left as they are."""
    original = module.add_eos_token_if_needed

    def keep(eos: int, chosen: dict[str, list[int]], rejected: dict[str, list[int]]) -> Any:
        if eos in chosen["input_ids"][-2:] and eos in rejected["input_ids"][-2:]:
            return chosen, rejected
        return original(eos, chosen, rejected)

    module.add_eos_token_if_needed = keep


def run_trl(args: argparse.Namespace, model_dir: str, out: Path) -> dict[str, Any]:
    import warnings

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    clock = CLOCKS["trl"] = StepClock()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if args.template:
        from prefkit.data.templates import resolve_template

        tokenizer.chat_template = resolve_template(args.template)  # what prefkit's side renders with
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    lora = LoraConfig(
        r=args.lora_rank, lora_alpha=2 * args.lora_rank, lora_dropout=0.0, target_modules="all-linear",
        task_type="CAUSAL_LM",
    )  # fmt: skip
    common = {
        "output_dir": str(out),
        "per_device_train_batch_size": args.batch,
        "gradient_accumulation_steps": args.grad_acc,
        "learning_rate": args.lr,
        "lr_scheduler_type": "constant",
        "max_steps": args.steps,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "seed": args.seed,
        "bf16": args.precision == "bf16",
        "use_cpu": not torch.cuda.is_available(),
        "max_length": args.cutoff,
    }
    if args.method == "sigmoid":
        from trl import DPOConfig as Cfg
        from trl import DPOTrainer as Trainer

        config = Cfg(loss_type=["sigmoid"], beta=0.1, **common)
    elif args.method == "simpo":
        import trl.experimental.cpo.cpo_trainer as module
        from trl.experimental.cpo import CPOConfig as Cfg
        from trl.experimental.cpo import CPOTrainer as Trainer

        _keep_template_ending(module)
        config = Cfg(loss_type="simpo", cpo_alpha=0.0, beta=2.0, simpo_gamma=0.5, **common)
    else:
        import trl.experimental.orpo.orpo_trainer as module
        from trl.experimental.orpo import ORPOConfig as Cfg
        from trl.experimental.orpo import ORPOTrainer as Trainer

        _keep_template_ending(module)
        config = Cfg(beta=0.1, **common)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = Trainer(
            model=model,
            args=config,
            train_dataset=Dataset.from_list(_conversational(args.data)),
            processing_class=tokenizer,
            peft_config=lora,
            callbacks=[clock.callback],
        )
    collate = trainer.data_collator

    def counting(features):
        batch = collate(features)
        # DPO stacks chosen and rejected rows (each prompt + reply) under `attention_mask`; CPO and ORPO
        # keep them as `chosen_*`/`rejected_*`, each a whole prompt + reply sequence.
        masks = ("chosen_attention_mask", "rejected_attention_mask")
        if masks[0] not in batch:
            masks = ("attention_mask",)
        tokens = sum(int(batch[m].sum()) for m in masks)
        clock.add(tokens, tokens)
        return batch

    trainer.data_collator = counting
    trainer.train()
    return clock.summary(args.warmup)


def side_main(args: argparse.Namespace) -> None:
    import torch

    from prefkit.env import cache_dir
    from prefkit.model.sources import resolve_first

    model_dir = resolve_first(args.model, cache_dir())
    with tempfile.TemporaryDirectory() as tmp, mock.patch.dict(os.environ):
        # An empty reference cache: the race measures the work done, not log-probs an earlier race left.
        os.environ["PREFKIT_CACHE"] = str(Path(tmp) / "cache")
        result = (run_prefkit if args.side == "prefkit" else run_trl)(args, model_dir, Path(tmp) / "run")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    result["peak_memory_gib"] = peak_memory_gib(device)
    print("RESULT " + json.dumps(result))


# ------------------------------------------------------------------------------------------- race
def run_side(side: str, method: str, argv: list[str]) -> dict[str, Any]:
    command = [sys.executable, __file__, *argv, "--side", side, "--method", method]
    done = subprocess.run(command, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"{side} {method} failed:\n{done.stderr[-4000:]}")


def parameters(model: str) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from prefkit.env import cache_dir
    from prefkit.model.sources import resolve_first

    config = AutoConfig.from_pretrained(resolve_first(model, cache_dir()))  # may convert: not on meta
    with torch.device("meta"):
        net = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in net.parameters())


def race_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The race's options (``argv``, else the command line's), the precision resolved for this machine."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--data", default="builtin:tutor_train")
    parser.add_argument("--methods", default="sigmoid,simpo,orpo")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--grad-acc", type=int, default=1)
    parser.add_argument("--cutoff", type=int, default=160)
    parser.add_argument(
        "--length",
        type=int,
        default=None,
        metavar="TOKENS",
        help="Race on the pairs lengthened to just under TOKENS tokens each (context put before each "
        "question); sets --cutoff to TOKENS. Default: the pairs as they are.",
    )
    parser.add_argument(
        "--template",
        default=None,
        metavar="NAME",
        help="A named chat template (chatml, gemma, ...) for both sides, for a model whose tokenizer has "
        "none. Default: the tokenizer's own.",
    )
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--precision", choices=["bf16", "fp32"], default=None)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--prefkit-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="A prefkit config override for prefkit's side (repeat), e.g. batch_layout=padded to see what "
        "a layout contributes; the defaults are what a user gets.",
    )
    parser.add_argument(
        "--prefkit-without",
        action="append",
        default=[],
        choices=sorted(SPEEDUPS),
        help="Run prefkit's side without one of its speed-ups (repeat), to see what it contributes.",
    )
    parser.add_argument("--side", choices=["prefkit", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    import torch

    from prefkit.env import cpu_bf16_fast

    if args.precision is None:
        args.precision = "bf16" if torch.cuda.is_available() or cpu_bf16_fast() else "fp32"
    if args.length is not None:
        args.cutoff = args.length  # the pairs are built to fit it: nothing is truncated on either side
    return args


def main() -> int:
    args = race_arguments()
    import torch

    if args.side:
        side_main(args)
        return 0

    device = "cuda" if torch.cuda.is_available() else "cpu"
    passed = sys.argv[1:]
    if "--precision" not in passed:
        passed += ["--precision", args.precision]
    load_before = os.getloadavg()[0]  # other work on the machine skews both sides' figures
    ceiling = matmul_ceiling(device)
    n = parameters(args.model)
    runs = []
    # --length: the pairs both sides train on, for this race (removed after it, or at exit if a side fails).
    lengthened = tempfile.TemporaryDirectory()
    if args.length is not None:
        passed += ["--data", str(write_lengthened_pairs(args, Path(lengthened.name)))]
    for method in args.methods.split(","):
        ours = run_side("prefkit", method, passed)
        theirs = run_side("trl", method, passed)
        flops = FLOPS_PER_TOKEN[method] * n
        runs.append(
            {
                "method": method,
                "prefkit": ours,
                "trl": theirs,
                "speedup": round(ours["tokens_per_second"] / theirs["tokens_per_second"], 3),
                "memory_ratio": round(ours["peak_memory_gib"] / theirs["peak_memory_gib"], 3),
                "loss_diff": abs(ours["step1_loss"] - theirs["step1_loss"]),
                "ceiling_fraction": round(
                    ours["computed_tokens_per_second"] * flops / (ceiling[args.precision] * 1e9), 3
                ),
                "trained_tokens_ceiling_fraction": round(
                    ours["tokens_per_second"] * flops / (ceiling[args.precision] * 1e9), 3
                ),
            }
        )
        print(json.dumps(runs[-1]), flush=True)
    lengthened.cleanup()
    report = {
        "ceiling_gflops": ceiling,
        "parameters": n,
        "machine": machine(),
        "settings": {k: v for k, v in vars(args).items() if k not in {"side", "method", "output"}},
        "command": "python benchmarks/vs_trl.py " + " ".join(sys.argv[1:]),
        # What makes the two sides' work the same (see _keep_template_ending).
        "same_sequences": "TRL's CPO/ORPO EOS append skipped for replies whose chat template closed the turn",
        "load_average_before": load_before,
        "date": dt.date.today().isoformat(),
        "runs": runs,
    }
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / f"{device}-{report['date']}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nceiling: {ceiling} GFLOP/s; {n / 1e6:.0f}M parameters; {args.precision}")
    print(f"{'method':8} {'prefkit tok/s':>14} {'TRL tok/s':>10} {'speedup':>8} {'mem ratio':>9} "
          f"{'loss diff':>10} {'ceiling':>8}")  # fmt: skip
    for r in runs:
        print(
            f"{r['method']:8} {r['prefkit']['tokens_per_second']:>14} {r['trl']['tokens_per_second']:>10} "
            f"{r['speedup']:>8} {r['memory_ratio']:>9} {r['loss_diff']:>10.2e} {r['ceiling_fraction']:>8}"
        )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
