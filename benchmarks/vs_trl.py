"""prefkit against TRL 1.16 on identical work, each side in its own fresh process.

    python benchmarks/vs_trl.py [--model smollm2-135m-instruct] [--data builtin:tutor_train]
                                [--methods sigmoid,simpo,orpo] [--steps 12] [--warmup 2]
                                [--batch 4] [--grad-acc 1] [--cutoff 160] [--length TOKENS]
                                [--template NAME] [--precision bf16|fp16|fp32]
                                [--lora-rank 8] [--lora-alpha 16] [--lr 5e-5] [--seed 42]
                                [--trl-checkpointing default|match] [--bound [STEPS]]
                                [--prefkit-set KEY=VALUE ...] [--prefkit-without SPEEDUP ...]
    python benchmarks/vs_trl.py --config FILE.yaml [any option above, which wins over the file]
    python benchmarks/vs_trl.py --methods sft [--data alpaca.json]

Both sides train the same model with LoRA on every linear layer (rank 8, alpha 16, no dropout), on the
same rows rendered with the model's chat template, with the same batch, precision, learning rate,
steps and seed: DPO (sigmoid) against ``DPOTrainer``, SimPO against
``CPOTrainer(loss_type="simpo", cpo_alpha=0)``, ORPO against ``ORPOTrainer``, and -- with ``--methods
sft`` -- prefkit's ``stage: sft`` against ``SFTTrainer`` (hinge and IPO, against ``DPOTrainer``'s losses of
those names, are there for configs that name them). The rows are prefkit's own: the data is resolved,
parsed, checked and split by prefkit (``prefkit.data.load.prepare_data``) on both sides, and TRL gets the
examples prefkit trains on, as conversational records.

SFT: loss on the assistant's tokens only, on both sides. A preference file trains on each prompt and its
chosen reply (as prefkit's ``stage: sft`` does); an SFT file (alpaca, sharegpt, messages) as it is. TRL
gets each row as a conversational prompt + completion with ``SFTConfig(completion_only_loss=True)``: the
completion is the reply with the chat template's end of turn, the tokens prefkit labels. Where a row has
more than one assistant turn (prefkit trains on every one), TRL gets prefkit's tokenised rows instead
(``input_ids`` and ``labels``, which its SFTTrainer trains as given): ``assistant_only_loss`` would need a
chat template TRL can mark, and its marks need not be prefkit's tokens. In float32 the two sides' step-1
losses agree to ~1e-6; in bf16 they differ by ~0.01-0.03, TRL's being the further from float32's (its
output layer's logits are rounded to bf16 before the loss; prefkit's log-softmax is not).

Per race and per side (``runs[i].prefkit``, ``runs[i].trl`` in the JSON): ``tokens_per_second`` (trained
tokens, below) and ``seconds_per_step`` (median), both over the steps after ``--warmup``;
``peak_memory_gib`` (resident set on a CPU, allocated CUDA memory on a GPU) and ``memory_at_start_gib``
(the same when training began, the model loaded and the data prepared); prefkit's
``fused_accumulation`` (micro-batches per fused batch, and that batch's size); ``step1_loss``, logged before
any update: the same model on the same tokens gives the same loss (DPO's is ln 2 on both sides, the policy
being its reference then; ORPO's differ by design, TRL 1.16's ORPOTrainer taking its NLL term over prompt +
reply, prefkit over the reply); ``activation_checkpointing``; and TRL's ``rows`` (the rows both sides draw
from), ``row_shape`` and ``rows_over_cutoff``. Per race (``runs[i]``; the table prints them all):
``speedup`` (prefkit's tokens/s over TRL's), ``memory_ratio`` (prefkit's peak memory over TRL's),
``training_memory_ratio`` (the same for what training added to each side's memory, libraries and model
left out),
``loss_diff`` (the step-1 losses' difference) and ``ceiling_fraction``: prefkit's computed tokens/s times
the FLOPs a token costs, over this machine's matmul throughput in the race's precision (measured first;
LoRA: policy forward + input gradients about 4N, a reference forward 2N more; full fine-tuning 2N more for
the weight gradients; N = parameters); with ``--bound``, ``bound_fraction`` and ``bound_ceiling_fraction``.

``--bound [STEPS]`` (opt-in: it trains STEPS more steps on prefkit's side, 2 by default, and replays their
matmuls six times -- about six of those steps' matmul time again) adds ``bound_fraction``: the fraction of
its own matmul-replay bound the step reaches. After the timed steps, every matrix multiply of the next
STEPS steps (forward and backward, policy and reference, output layer, LoRA, the attention's batched ones)
is recorded with its shapes, strides and dtype and replayed on fresh tensors (median of five replays after
a warm-up), as ``benchmarks/matmul_bound.py`` does; computed tokens per second of the timed steps over
computed tokens per second of the replay is ``bound_fraction``, i.e. the share of a step's time its
matmuls would take if nothing else took any (1.0: nothing but matmuls). ``bound_ceiling_fraction`` is the
replay's ceiling fraction. The extra steps are neither timed nor in the peak memory (they do stretch
prefkit's learning-rate schedule by STEPS, which changes no step's work). prefkit's ``bound`` (in the JSON)
holds the replay's own figures.

"Trained tokens" are counted the same way on both sides: the non-padding tokens of prompt + chosen and
prompt + rejected of every pair trained on (what a padded batch holds); for SFT the non-padding tokens of
prompt + completion. Where prefkit computes fewer (a shared prompt computed once),
``computed_tokens_per_second`` says so and the ceiling fraction uses it.

``--config FILE.yaml`` races the work a prefkit / LLaMA-Factory YAML describes, read with prefkit's own
loader: model, data (``train_file``, or ``dataset`` + ``dataset_dir`` through its ``dataset_info.json``, with
``max_samples``, ``val_size``, ...), method (``stage`` + ``pref_loss``), batch, gradient accumulation,
``cutoff_len``, LoRA (rank, alpha, targets, dropout) or full fine-tuning, precision, learning rate and its
schedule, seed, template, the loss's settings and the TrainingArguments keys the YAML passes through --
on both sides. ``max_steps`` (if set) is the race's ``--steps``; the race sets its own output, logging,
saving and no evaluation. prefkit's side gets the YAML's prefkit-only keys too (``batch_layout``,
``fuse_accumulation_tokens``, ...: how prefkit computes, not what). A key that cannot be put to TRL
(``quantization_bit``, ``adapter_name_or_path``, ``dpo_label_smoothing`` for DPO, ``pref_ftx`` for ORPO) is
left out on BOTH sides, so that they still do the same work, and listed under ``not_raced`` in the output;
every key the YAML sets is accounted for, printed first and in the JSON's ``config`` (``not_raced``,
``prefkit_only``, ``set_by_race``, ``overridden``, ``raced``, and the loader's own warnings about keys
prefkit ignores). A command-line option given with ``--config`` wins over the file (``overridden``);
``--data FILE`` replaces the YAML's ``train_file`` or ``dataset``.

``--trl-checkpointing``: TRL 1.16's configs turn activation (gradient) checkpointing on by default,
prefkit does not. ``default`` leaves TRL's default (the race without ``--config``, as it always ran);
``match`` gives TRL the YAML's ``activation_checkpointing`` (off unless set there): the default with
``--config``, where both sides run what the YAML says. Each side's setting is in the output.

``--length N`` races on pairs N tokens long rather than the bundled pairs' ~100: each pair's question is
lengthened with text from the other pairs put before it, to just under N tokens of prompt + longer reply in
the model's chat template, and ``--cutoff`` becomes N, so neither side truncates (their truncation rules
differ) and both train the same sequences -- e.g. ``--length 1024`` for the race on a GPU. Without it, the
output counts the rows longer than the cutoff (``rows_over_cutoff``), which the two sides cut differently.

``--template NAME`` renders the rows with prefkit's named chat template on both sides (prefkit's
``template:``; TRL's tokenizer given the same Jinja text), for a model whose tokenizer has none, such as the
pretrained gemma3-270m (``--template gemma``).

``--prefkit-set`` overrides prefkit's config on prefkit's side only (``batch_layout=padded``: TRL's
layout); ``--prefkit-without`` turns one of prefkit's speed-ups off (``fused_output_layer``, ``lean_lora``,
``lean_attention``) to see what it contributes.

Writes ``benchmarks/results/<device>-<date>.json``; prints a line per race and a table. A benchmark, not a
test: run it on a quiet machine.
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
# x N per trained token with LoRA (no weight gradients of the base); full fine-tuning adds 2 (FULL_EXTRA).
FLOPS_PER_TOKEN = {"sigmoid": 6, "hinge": 6, "ipo": 6, "simpo": 4, "orpo": 4, "sft": 4}
FULL_EXTRA = 2
METHODS = tuple(FLOPS_PER_TOKEN)
# The race without --config; the options a YAML can set (an option given on the command line wins).
DEFAULTS: dict[str, Any] = {
    "model": "smollm2-135m-instruct",
    "data": "builtin:tutor_train",
    "methods": "sigmoid,simpo,orpo",
    "steps": 12,
    "batch": 4,
    "grad_acc": 1,
    "cutoff": 160,
    "template": None,
    "lora_rank": 8,
    "lora_alpha": None,  # 2 x rank
    "lr": 5e-5,
    "seed": 42,
    "precision": None,  # bf16 where this machine computes it fast, else fp32
    "trl_checkpointing": None,  # "default" without --config, "match" with one
}
# What the race sets without --config, besides DEFAULTS; a YAML's values replace them.
PLAIN_RACE: dict[str, Any] = {
    "lora_target": ["all"],
    "lora_dropout": 0.0,
    "finetuning_type": "lora",
    "trust_remote_code": False,
    "cache_dir": None,
    "lr_scheduler_type": "constant",
    "warmup_ratio": 0.0,
    "max_grad_norm": 1.0,
    "disable_dropout": True,
    "precompute_ref_log_probs": False,
    "training_arguments": {},  # TrainingArguments fields a YAML passes through, for both sides
    "loss_keys": {},  # the loss settings a YAML sets: pref_beta, simpo_gamma, pref_ftx, dpo_label_smoothing
    "accounting": {},  # what became of each key a YAML sets
    "yaml_arguments": [],  # every TrainingArguments field a YAML sets (current names)
}


# ------------------------------------------------------------------------------------------ machine
def matmul_ceiling(device: str, size: int = 2048, seconds: float = 3.0) -> dict[str, float]:
    """GFLOP/s of a large square matmul in bf16 and fp32 (and fp16 on a GPU): the most this device's math
    units give."""
    import torch

    dtypes = {"bf16": torch.bfloat16, "fp32": torch.float32}
    if device == "cuda":
        dtypes["fp16"] = torch.float16
    out = {}
    for name, dtype in dtypes.items():
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
                clock.memory_at_start = memory_now_gib()
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
        self.memory_at_start: float | None = None  # the model loaded and the data prepared
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

    def summary(self, warmup: int, last: int | None = None) -> dict[str, Any]:
        """The figures of steps ``warmup`` + 1 to ``last`` (default: every step trained)."""
        seconds = [t1 - t0 for t0, t1 in itertools.pairwise(self.marks)][warmup:last]
        first, last = warmup + 1, warmup + len(seconds)
        return {
            "measured_steps": len(seconds),
            "seconds_per_step": round(statistics.median(seconds), 3),
            "tokens_per_second": round(self.step_tokens("tokens", first, last) / sum(seconds), 1),
            "computed_tokens_per_second": round(self.step_tokens("computed", first, last) / sum(seconds), 1),
            "step1_loss": self.first_loss,
            "memory_at_start_gib": self.memory_at_start,
        }


class MatmulRecorder:
    """A TrainerCallback that records every matrix multiply (``mm``, ``addmm``, ``bmm``, ``baddbmm``: its
    operands' shapes, strides and dtypes) of optimiser steps ``first`` to ``last`` (from 1, inclusive),
    forward and backward, for :meth:`replay_seconds`."""

    def __init__(self, first: int, last: int) -> None:
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode
        from transformers import TrainerCallback

        aten = torch.ops.aten
        products = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default}
        recorder = self
        self.recorded: list[tuple[Any, tuple[Any, ...]]] = []

        class Record(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func in products:
                    tensors = tuple(
                        (tuple(t.shape), t.stride(), t.dtype) for t in args if isinstance(t, torch.Tensor)
                    )
                    recorder.recorded.append((func, tensors))
                return func(*args, **(kwargs or {}))

        class _Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                if state.global_step + 1 == first:  # global_step counts the steps already done
                    recorder.mode = Record()
                    recorder.mode.__enter__()

            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == last and recorder.mode is not None:
                    recorder.mode.__exit__(None, None, None)
                    recorder.mode = None

        self.mode: Any = None
        self.callback = _Callback()

    def replay_seconds(self, device: str, repeats: int = 5) -> float:
        """Seconds to run exactly the recorded matmuls, in order, on fresh tensors of the recorded shapes,
        strides and dtypes (one per distinct operand, warm in the caches): the median of ``repeats``
        replays after a warm-up."""
        import torch

        def operand(spec: tuple[tuple[int, ...], tuple[int, ...], Any]) -> Any:
            shape, stride, dtype = spec
            span = 0 if 0 in shape else 1 + sum((n - 1) * step for n, step in zip(shape, stride, strict=True))
            return torch.empty(span, dtype=dtype, device=device).uniform_(-1, 1).as_strided(shape, stride)

        inputs = {spec: operand(spec) for _, tensors in self.recorded for spec in tensors}
        calls = [(func, [inputs[spec] for spec in tensors]) for func, tensors in self.recorded]

        def replay() -> float:
            _sync(device)
            started = time.perf_counter()
            for func, operands in calls:
                func(*operands)
            _sync(device)
            return time.perf_counter() - started

        replay()  # warm-up
        return statistics.median(replay() for _ in range(repeats))


def memory_now_gib() -> float:
    """The memory in use now: allocated CUDA memory where a GPU trains, else the resident set."""
    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.memory_allocated() / 2**30, 3)
    import psutil

    return round(psutil.Process().memory_info().rss / 2**30, 3)


def peak_memory_gib(device: str) -> float:
    if device == "cuda":
        import torch

        return round(torch.cuda.max_memory_allocated() / 2**30, 3)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 2**20, 3)
    import psutil

    return round(psutil.Process().memory_info().rss / 2**30, 3)


def trl_rows(prepared: Any, method: str) -> tuple[list[dict[str, Any]], str]:
    """The examples prefkit trains on (``prepared``: what :func:`prefkit.data.load.prepare_data` gives) as
    TRL's records, and the shape they take. Pairs: conversational prompt / chosen / rejected, so that TRL
    applies the chat template as prefkit does. SFT: conversational ``prompt_completion`` (the last
    assistant turn is the completion, everything before it the prompt; turns after the last reply, which
    prefkit does not train, dropped) where no row has more than one assistant turn; else ``tokenized``:
    prefkit's own ``input_ids`` and ``labels`` (every reply labelled), which TRL's SFTTrainer trains as they
    are -- a prompt + completion record labels one reply only, and TRL's ``assistant_only_loss`` needs a
    chat template it can mark (``{% generation %}``) whose marks need not be prefkit's tokens."""
    from prefkit.data.examples import PreferenceExample

    examples = prepared.train_examples
    if method != "sft":
        return [
            {
                "prompt": [m.to_dict() for m in e.prompt],
                "chosen": [{"role": "assistant", "content": e.chosen}],
                "rejected": [{"role": "assistant", "content": e.rejected}],
            }
            for e in examples
        ], "preference"
    conversations = []
    for example in examples:
        if isinstance(example, PreferenceExample):
            messages = list(example.chosen_messages())
        else:
            messages = list(example.messages)
        while messages and messages[-1].role != "assistant":
            messages.pop()
        conversations.append([m.to_dict() for m in messages])
    if any(sum(m["role"] == "assistant" for m in c) > 1 for c in conversations):
        features = prepared.report.features
        return [
            {"input_ids": features[e.location]["input_ids"], "labels": features[e.location]["labels"]}
            for e in examples
        ], "tokenized"
    return [{"prompt": c[:-1], "completion": c[-1:]} for c in conversations], "prompt_completion"


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

    tokenizer = load_tokenizer(resolve_first(args.model, cache_dir(args.cache_dir)))
    pairs = args.steps * args.batch * args.grad_acc
    rows = lengthened_pairs(args.data, tokenizer, args.length, limit=pairs, template=args.template)
    path = folder / f"pairs-{args.length}.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ the loss's settings
# The race's values (prefkit's method defaults), where a YAML does not set them.
METHOD_DEFAULTS: dict[str, dict[str, float]] = {
    "sigmoid": {"pref_beta": 0.1},
    "hinge": {"pref_beta": 0.1},
    "ipo": {"pref_beta": 0.1},
    "simpo": {"pref_beta": 2.0, "simpo_gamma": 0.5},
    "orpo": {"pref_beta": 0.1},
    "sft": {},
}
# The loss keys each method reads that TRL's trainer for it has no counterpart for, with why.
UNMAPPED_LOSS_KEYS: dict[str, dict[str, str]] = {
    "sigmoid": {"dpo_label_smoothing": "TRL 1.16's sigmoid DPO loss has no label smoothing"},
    "orpo": {"pref_ftx": "TRL's ORPOTrainer has no extra NLL weight (ORPO's own NLL term is kept)"},
}
# The loss keys each method reads at all (prefkit ignores the others for it).
LOSS_KEYS_READ = {
    "sigmoid": {"pref_beta", "pref_ftx", "dpo_label_smoothing"},
    "hinge": {"pref_beta", "pref_ftx"},
    "ipo": {"pref_beta", "pref_ftx"},
    "simpo": {"pref_beta", "simpo_gamma", "pref_ftx", "dpo_label_smoothing"},
    "orpo": {"pref_beta", "pref_ftx"},
    "sft": set(),
}


def loss_settings(method: str, given: dict[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """``method``'s loss settings for both sides: a YAML's values (``given``) where it set them, else the
    method's defaults; a key TRL has no counterpart for is left at its neutral value (0) on both sides.
    Returns the settings and the keys left out, each with why."""
    settings = {"pref_beta": 0.1, "simpo_gamma": 0.0, "pref_ftx": 0.0, "dpo_label_smoothing": 0.0}
    settings |= METHOD_DEFAULTS[method]
    dropped = {}
    for key, value in given.items():
        if key not in LOSS_KEYS_READ[method]:
            continue  # prefkit does not read it for this method either
        reason = UNMAPPED_LOSS_KEYS.get(method, {}).get(key)
        if reason and value:
            dropped[key] = f"{value} -- {reason}: 0 on both sides"
            continue
        settings[key] = value
    return settings, dropped


def _method_overrides(method: str, given: dict[str, Any]) -> list[str]:
    """prefkit's stage, loss and loss settings for ``method``: the same values TRL's configs get."""
    if method == "sft":
        return ["stage=sft"]
    settings, _ = loss_settings(method, given)
    out = ["stage=dpo", f"pref_loss={method}", f"pref_beta={settings['pref_beta']}"]
    if method == "simpo":
        out.append(f"simpo_gamma={settings['simpo_gamma']}")
    if given:  # a YAML's race: its loss keys, less what TRL cannot take (the plain race sets none)
        out += [f"pref_ftx={settings['pref_ftx']}", f"dpo_label_smoothing={settings['dpo_label_smoothing']}"]
    return out


# --------------------------------------------------------------------------------------- a config
# Config keys the race puts to both sides (its options, or TRL's counterparts).
RACED_KEYS = frozenset(
    {
        "model_name_or_path", "trust_remote_code", "stage", "pref_loss", "finetuning_type", "do_train",
        "lora_rank", "lora_alpha", "lora_target", "lora_dropout", "cutoff_len", "template",
        "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "lr_scheduler_type",
        "warmup_ratio", "max_grad_norm", "max_steps", "bf16", "fp16", "seed", "disable_dropout",
        "precompute_ref_log_probs", "pref_beta", "simpo_gamma", "pref_ftx", "dpo_label_smoothing",
        # The data: prefkit resolves it, TRL gets the rows prefkit trains on.
        "train_file", "dataset", "dataset_dir", "formatting", "columns", "max_samples", "val_size",
        "on_bad_example",
    }
)  # fmt: skip
# Config keys the race sets itself on prefkit's side (TRL's counterparts likewise), each with why.
SET_BY_RACE: dict[str, str] = {
    "output_dir": "a temporary folder",
    "overwrite_output_dir": "a temporary folder",
    "resume_from_checkpoint": "a fresh run",
    "cache_dir": "the model is resolved from it; the reference cache is an empty temporary one",
    "logging_steps": "the loss is logged every step",
    "save_steps": "no checkpoints in the race",
    "save_total_limit": "no checkpoints in the race",
    "plot_loss": "no plots",
    "report_to": "no reporting",
    "num_train_epochs": "the race trains --steps steps",
    "eval_strategy": "no evaluation in the race",
    "eval_steps": "no evaluation in the race",
    "eval_file": "no evaluation in the race",
    "eval_dataset": "no evaluation in the race",
    "max_eval_samples": "no evaluation in the race",
    "per_device_eval_batch_size": "no evaluation in the race",
    "eval_generate": "no evaluation in the race",
    "eval_scorers": "no evaluation in the race",
    "eval_max_new_tokens": "no evaluation in the race",
}
# Config keys that change the work and have no TRL counterpart here: left out on both sides.
NOT_RACED: dict[str, str] = {
    "quantization_bit": "not put to TRL (it would need the model quantised with bitsandbytes there too): "
    "both sides train the unquantised model",
    "quantization_type": "no quantisation in the race (see quantization_bit)",
    "double_quantization": "no quantisation in the race (see quantization_bit)",
    "adapter_name_or_path": "not put to TRL: both sides start a fresh adapter",
}
# TrainingArguments fields (passed through) the race sets itself: logging, saving, evaluation, reporting.
RACE_ARGUMENT_PREFIXES = (
    "logging_", "save_", "eval_", "do_eval", "do_predict", "load_best_model", "metric_for_best_model",
    "greater_is_better", "push_to_hub", "hub_", "run_name", "report_to", "prediction_loss_only",
)  # fmt: skip
# TrainingArguments fields the race sets on both sides: collation must happen in the process that counts.
RACE_ARGUMENTS = {"dataloader_num_workers": 0}


def read_config(path: str) -> dict[str, Any]:
    """The race's settings from the YAML at ``path``, read with prefkit's own loader: DEFAULTS' and
    PLAIN_RACE's names, and ``accounting`` -- for every key the file sets, what the race does with it
    (``raced``: both sides; ``prefkit_only``; ``set_by_race``; ``not_raced``: left out on both sides)."""
    from prefkit.config import load_config
    from prefkit.config.passthrough import current_argument_names

    ignored: list[str] = []  # the loader's warnings: keys prefkit ignores, renamed keys
    config = load_config(path, [], warn=ignored.append)
    sources = config.sources()
    given = {
        key
        for key, origin in sources.items()
        if not origin.startswith(("default", "method default", "set in code"))
    }
    precision = "bf16" if config.bf16 else "fp16" if config.fp16 else "fp32"
    passthrough = current_argument_names(config.training_arguments)
    settings: dict[str, Any] = {
        "model": config.model_name_or_path,
        "data": config.train_file,  # None: the YAML names datasets (prefkit resolves them on both sides)
        "methods": "sft" if config.stage == "sft" else config.pref_loss,
        "steps": config.max_steps if config.max_steps > 0 else DEFAULTS["steps"],
        "batch": config.per_device_train_batch_size,
        "grad_acc": config.gradient_accumulation_steps,
        "cutoff": config.cutoff_len,
        "template": config.template,
        "lora_rank": config.lora_rank,
        "lora_alpha": config.lora_alpha if "lora_alpha" in given else None,
        "lr": config.learning_rate,
        "seed": config.seed,
        "precision": precision,
        "trl_checkpointing": "match",
        "lora_target": config.lora_target,
        "lora_dropout": config.lora_dropout,
        "finetuning_type": config.finetuning_type,
        "trust_remote_code": config.trust_remote_code,
        "cache_dir": config.cache_dir,
        "lr_scheduler_type": config.lr_scheduler_type,
        "warmup_ratio": config.warmup_ratio,
        "max_grad_norm": config.max_grad_norm,
        "disable_dropout": config.disable_dropout,
        "precompute_ref_log_probs": config.precompute_ref_log_probs,
        "training_arguments": {
            k: v for k, v in passthrough.items() if not k.startswith(RACE_ARGUMENT_PREFIXES)
        },
        "yaml_arguments": sorted(passthrough),
        "loss_keys": {
            k: getattr(config, k)
            for k in ("pref_beta", "simpo_gamma", "pref_ftx", "dpo_label_smoothing")
            if k in given
        },
    }
    accounting: dict[str, Any] = {
        "raced": {},
        "prefkit_only": {},
        "set_by_race": {},
        "not_raced": {},
        "overridden": {},  # by an option on the command line (race_arguments)
        "loader_warnings": ignored,  # keys prefkit's loader ignores (LLaMA-Factory's), renamed keys
    }
    values = config.resolved()
    for key in sorted(given):
        shown = json.dumps(values.get(key), default=str)
        if key in config.training_arguments:  # passed through, as the user spelled it
            current = next(iter(current_argument_names({key: values.get(key)})))
            if current in RACE_ARGUMENTS:
                accounting["set_by_race"][key] = (
                    f"{shown} -- {RACE_ARGUMENTS[current]} on both sides (tokens are counted as batches "
                    "are collated, in the training process)"
                )
            elif current.startswith(RACE_ARGUMENT_PREFIXES):
                accounting["set_by_race"][key] = f"{shown} -- logging, saving and evaluation are the race's"
            else:
                accounting["raced"][key] = f"{shown} (TrainingArguments, both sides)"
        elif key in RACED_KEYS:
            accounting["raced"][key] = shown
        elif key in SET_BY_RACE:
            accounting["set_by_race"][key] = f"{shown} -- {SET_BY_RACE[key]}"
        elif key in NOT_RACED:
            accounting["not_raced"][key] = f"{shown} -- {NOT_RACED[key]}"
        else:
            accounting["prefkit_only"][key] = f"{shown} -- how prefkit computes; TRL has no such setting"
    if config.finetuning_type == "full" and "lora_target" in given:
        accounting["raced"]["lora_target"] += " (unused: full fine-tuning)"
    settings["accounting"] = accounting
    return settings


# The config keys each race option stands for (--config: the option, given, wins over them).
OPTION_KEYS = {
    "model": ("model_name_or_path",),
    "data": ("train_file", "dataset"),
    "methods": ("stage", "pref_loss"),
    "steps": ("max_steps",),
    "batch": ("per_device_train_batch_size",),
    "grad_acc": ("gradient_accumulation_steps",),
    "cutoff": ("cutoff_len",),
    "template": ("template",),
    "lora_rank": ("lora_rank",),
    "lora_alpha": ("lora_alpha",),
    "lr": ("learning_rate",),
    "seed": ("seed",),
    "precision": ("bf16", "fp16"),
    "trl_checkpointing": (),
}


def account_options(args: argparse.Namespace) -> None:
    """Add to ``args.accounting`` the YAML's keys an option on the command line replaced, and the loss keys
    a method of the race cannot put to TRL (left out on both sides), per method."""
    if not args.config:
        return
    raced = args.accounting["raced"]
    for option in args.explicit:
        for key in OPTION_KEYS[option]:
            if key in raced:
                flag = "--" + option.replace("_", "-")
                value = args.length if option == "cutoff" and args.length else getattr(args, option)
                args.accounting["overridden"][key] = f"{raced.pop(key)} -> {flag} {value}"
    if args.length is not None:  # the YAML's data lengthened (a file the race writes) and its cutoff
        for key in ("cutoff_len", "train_file"):
            if key in raced:
                args.accounting["overridden"][key] = f"{raced.pop(key)} -> --length {args.length}"
    for method in args.methods.split(","):
        _, dropped = loss_settings(method, args.loss_keys)
        for key, why in dropped.items():
            raced.pop(key, None)
            args.accounting["not_raced"][f"{key} ({method})"] = why


def prefkit_overrides(args: argparse.Namespace, model_dir: str, out: Path, cache: Path) -> list[str]:
    """The ``key=value`` overrides of prefkit's config for this side's race (on ``args.config``'s YAML, if
    any): the race's settings, then its own (output, logging, no saving); :func:`prefkit_config` adds
    ``--prefkit-set``'s on prefkit's side."""
    overrides = [
        f"model_name_or_path={model_dir}",
        # A --data given with --config replaces the YAML's data (its train_file or its datasets).
        *([f"train_file={args.data}"] if not args.config or "data" in args.explicit else []),
        *(["dataset=null"] if args.config and "data" in args.explicit else []),
        *([f"template={args.template}"] if args.template else []),
        f"output_dir={out}",
        *_method_overrides(args.method, args.loss_keys),
        f"lora_rank={args.lora_rank}",
        f"lora_alpha={args.lora_alpha}",
        f"cutoff_len={args.cutoff}",
        f"per_device_train_batch_size={args.batch}",
        f"gradient_accumulation_steps={args.grad_acc}",
        f"learning_rate={args.lr}",
        f"max_steps={args.steps + args.bound}",
        "logging_steps=1",
        "save_steps=100000",
        "plot_loss=false",
        f"seed={args.seed}",
        f"bf16={str(args.precision == 'bf16').lower()}",
        *(["fp16=true"] if args.precision == "fp16" else []),
    ]
    if args.config:
        overrides += [
            *(["fp16=false"] if args.precision != "fp16" else []),
            "overwrite_output_dir=true",
            "resume_from_checkpoint=false",
            "save_total_limit=null",
            "report_to=none",
            "eval_strategy=no",
            f"cache_dir={cache}",
            *(f"{key}=null" for key in ("quantization_bit", "adapter_name_or_path")),
            *(f"{key}={value}" for key, value in RACE_ARGUMENTS.items()),
        ]
        strategies = {"save_strategy": "steps", "logging_strategy": "steps"}
        overrides += [f"{k}={v}" for k, v in strategies.items() if k in args.yaml_arguments]
    else:
        overrides += ["lora_target=all", "lr_scheduler_type=constant"]
    return overrides


def prefkit_config(args: argparse.Namespace, model_dir: str, out: Path, cache: Path, *, own: bool) -> Any:
    """prefkit's Config for this race: ``args.config``'s YAML (if any) with :func:`prefkit_overrides`, and
    ``--prefkit-set`` where ``own`` (prefkit's side; TRL's reads the rows and settings without them)."""
    from prefkit.config import load_config

    overrides = prefkit_overrides(args, model_dir, out, cache)
    return load_config(args.config, [*overrides, *(args.prefkit_set if own else [])])


# --------------------------------------------------------------------------------------- the sides
def run_prefkit(args: argparse.Namespace, model_dir: str, out: Path, cache: Path) -> dict[str, Any]:
    import torch

    import prefkit.train.recipe as train_module
    from prefkit.data.collate import NUM_TOKENS, pair_tokens

    clock = CLOCKS["prefkit"] = StepClock()
    make_collator = train_module.preference_collator
    make_sft_collator = train_module.SFTCollator

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

    def counting_sft_collator(*args: Any, **kwargs: Any) -> Any:
        """SFT's collator, counting each batch's non-padding tokens (trained and computed alike)."""
        inner = make_sft_collator(*args, **kwargs)

        def collate(features: list[dict[str, Any]]) -> dict[str, Any]:
            batch = inner(features)
            clock.add(int(batch[NUM_TOKENS]), int(batch["attention_mask"].sum()))
            return batch

        return collate

    fusions = []
    decide_fusion = train_module.accumulation_fusion

    def recorded_fusion(*args: Any, **kwargs: Any) -> Any:
        fusions.append(decide_fusion(*args, **kwargs))
        return fusions[-1]

    train_module.preference_collator = counting_collator  # instrumentation only
    train_module.SFTCollator = counting_sft_collator
    train_module.accumulation_fusion = recorded_fusion
    _turn_off(args.prefkit_without)
    config = prefkit_config(args, model_dir, out, cache, own=True)
    callbacks = [clock.callback]
    recorder = None
    if args.bound:
        recorder = MatmulRecorder(args.steps + 1, args.steps + args.bound)
        callbacks.append(recorder.callback)
    train_module.train(config, callbacks=callbacks)
    result = clock.summary(args.warmup, args.steps)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    result["peak_memory_gib"] = peak_memory_gib(device)  # before the replay's tensors
    result["activation_checkpointing"] = _checkpointing(config.training_arguments)
    fusion = fusions[-1]
    result["fused_accumulation"] = {"micro_batches_per_batch": fusion.factor, "batch": fusion.batch}
    if recorder is not None:
        seconds = recorder.replay_seconds(device)
        tokens = clock.step_tokens("computed", args.steps + 1, args.steps + args.bound)
        result["bound"] = {
            "recorded_steps": args.bound,
            "matmuls_per_step": round(len(recorder.recorded) / args.bound, 1),
            "matmul_seconds_per_step": round(seconds / args.bound, 3),
            "computed_tokens_per_matmul_second": round(tokens / seconds, 1),
        }
    return result


def _checkpointing(training_arguments: dict[str, Any]) -> bool:
    from prefkit.config.passthrough import current_argument_names

    return bool(current_argument_names(training_arguments).get("activation_checkpointing"))


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


def trl_arguments(args: argparse.Namespace, out: Path, checkpointing: bool) -> dict[str, Any]:
    """The TrainingArguments every TRL config of this race gets."""
    import torch

    common = {
        "output_dir": str(out),
        "per_device_train_batch_size": args.batch,
        "gradient_accumulation_steps": args.grad_acc,
        "learning_rate": args.lr,
        "lr_scheduler_type": args.lr_scheduler_type,
        "max_grad_norm": args.max_grad_norm,
        "max_steps": args.steps,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "seed": args.seed,
        "bf16": args.precision == "bf16",
        "fp16": args.precision == "fp16",
        "use_cpu": not torch.cuda.is_available(),
        "max_length": args.cutoff,
    }
    if args.warmup_ratio and "warmup_steps" not in args.training_arguments:
        common["warmup_steps"] = args.warmup_ratio  # transformers 5: a warmup_steps below 1 is a ratio
    if args.config:
        common |= {k: v for k, v in args.training_arguments.items() if k != "activation_checkpointing"}
        common |= RACE_ARGUMENTS
    if args.trl_checkpointing == "match":
        common["activation_checkpointing"] = checkpointing
    return common


def run_trl(args: argparse.Namespace, model_dir: str, out: Path, cache: Path) -> dict[str, Any]:
    import warnings

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prefkit.data.load import prepare_data
    from prefkit.model.training import lora_targets

    clock = CLOCKS["trl"] = StepClock()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=args.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if args.template:
        from prefkit.data.templates import resolve_template

        tokenizer.chat_template = resolve_template(args.template)  # what prefkit's side renders with
    # The rows prefkit trains on, found, read, checked and split by prefkit itself from the same config.
    rows_config = prefkit_config(args, model_dir, out, cache, own=False)
    prepared = prepare_data(rows_config, tokenizer)
    rows, shape = trl_rows(prepared, args.method)
    full = args.finetuning_type == "full"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.precision]
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32 if full else dtype, trust_remote_code=args.trust_remote_code
    )  # full fine-tuning: float32 weights under mixed precision, as prefkit loads them
    lora = None
    if not full:
        lora = LoraConfig(
            r=args.lora_rank, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
            target_modules=lora_targets(args.lora_target), task_type="CAUSAL_LM",
        )  # fmt: skip
    common = trl_arguments(args, out, _checkpointing(args.training_arguments))
    loss, _ = loss_settings(args.method, args.loss_keys)
    preference = {"disable_dropout": args.disable_dropout}
    if args.method in ("sigmoid", "hinge", "ipo"):
        from trl import DPOConfig as Cfg
        from trl import DPOTrainer as Trainer

        ftx = loss["pref_ftx"]
        config = Cfg(
            loss_type=[args.method, "sft"] if ftx else [args.method],
            loss_weights=[1.0, ftx] if ftx else None,
            beta=loss["pref_beta"],
            precompute_ref_log_probs=args.precompute_ref_log_probs,
            **preference,
            **common,
        )
    elif args.method == "simpo":
        import trl.experimental.cpo.cpo_trainer as module
        from trl.experimental.cpo import CPOConfig as Cfg
        from trl.experimental.cpo import CPOTrainer as Trainer

        _keep_template_ending(module)
        config = Cfg(
            loss_type="simpo",
            cpo_alpha=loss["pref_ftx"],
            beta=loss["pref_beta"],
            simpo_gamma=loss["simpo_gamma"],
            label_smoothing=loss["dpo_label_smoothing"],
            **preference,
            **common,
        )
    elif args.method == "orpo":
        import trl.experimental.orpo.orpo_trainer as module
        from trl.experimental.orpo import ORPOConfig as Cfg
        from trl.experimental.orpo import ORPOTrainer as Trainer

        _keep_template_ending(module)
        config = Cfg(beta=loss["pref_beta"], **preference, **common)
    else:
        from trl import SFTConfig as Cfg
        from trl import SFTTrainer as Trainer

        # Loss on the completion (prefkit's labels: the reply and the template's end of turn), or on prefkit's
        # labels as given (multi-turn rows); rows padded, never packed, as prefkit's SFT batches are.
        config = Cfg(
            completion_only_loss=True if shape == "prompt_completion" else None,
            packing=False,
            padding_free=False,
            **common,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = Trainer(
            model=model,
            args=config,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=lora,
            callbacks=[clock.callback],
        )
    collate = trainer.data_collator

    def counting(features):
        batch = collate(features)
        # DPO stacks chosen and rejected rows (each prompt + reply) under `attention_mask`; CPO and ORPO
        # keep them as `chosen_*`/`rejected_*`, each a whole prompt + reply sequence; SFT's rows are
        # prompt + completion under `attention_mask`.
        masks = ("chosen_attention_mask", "rejected_attention_mask")
        if masks[0] not in batch:
            masks = ("attention_mask",)
        tokens = sum(int(batch[m].sum()) for m in masks)
        clock.add(tokens, tokens)
        return batch

    trainer.data_collator = counting
    trainer.train()
    result = clock.summary(args.warmup)
    result["activation_checkpointing"] = bool(trainer.args.activation_checkpointing)
    result["rows"] = len(rows)
    result["row_shape"] = shape
    # Rows longer than the cutoff: each side cuts them by its own rule (see --length).
    result["rows_over_cutoff"] = prepared.report.over_cutoff
    return result


def side_main(args: argparse.Namespace) -> None:
    import torch

    from prefkit.env import cache_dir
    from prefkit.model.sources import resolve_first

    model_dir = resolve_first(args.model, cache_dir(args.cache_dir))
    with tempfile.TemporaryDirectory() as tmp, mock.patch.dict(os.environ):
        # An empty reference cache: the race measures the work done, not log-probs an earlier race left.
        cache = Path(tmp) / "cache"
        os.environ["PREFKIT_CACHE"] = str(cache)
        run = run_prefkit if args.side == "prefkit" else run_trl
        result = run(args, model_dir, Path(tmp) / "run", cache)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    result.setdefault("peak_memory_gib", peak_memory_gib(device))
    print("RESULT " + json.dumps(result))


# ------------------------------------------------------------------------------------------- race
def run_side(side: str, method: str, argv: list[str]) -> dict[str, Any]:
    command = [sys.executable, __file__, *argv, "--side", side, "--method", method]
    done = subprocess.run(command, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"{side} {method} failed:\n{done.stderr[-4000:]}")


def parameters(model: str | list[str], cache: str | None = None) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from prefkit.env import cache_dir
    from prefkit.model.sources import resolve_first

    config = AutoConfig.from_pretrained(resolve_first(model, cache_dir(cache)))  # may convert: not on meta
    with torch.device("meta"):
        net = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in net.parameters())


def race_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The race's options (``argv``, else the command line's): those given, else ``--config``'s YAML's,
    else DEFAULTS; the precision resolved for this machine. ``explicit`` names the options given."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE.yaml",
        help="Race the work this prefkit / LLaMA-Factory YAML describes (options given here win over it).",
    )
    parser.add_argument("--model", default=None, help=f"Default: {DEFAULTS['model']}.")
    parser.add_argument(
        "--data", default=None, help=f"A data file (preference or SFT). Default: {DEFAULTS['data']}."
    )
    parser.add_argument(
        "--methods",
        default=None,
        help=f"Comma-separated, of {', '.join(METHODS)}. Default: {DEFAULTS['methods']}.",
    )
    parser.add_argument("--steps", type=int, default=None, help=f"Default: {DEFAULTS['steps']}.")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=None, help=f"Default: {DEFAULTS['batch']}.")
    parser.add_argument("--grad-acc", type=int, default=None, help=f"Default: {DEFAULTS['grad_acc']}.")
    parser.add_argument("--cutoff", type=int, default=None, help=f"Default: {DEFAULTS['cutoff']}.")
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
    parser.add_argument("--lora-rank", type=int, default=None, help=f"Default: {DEFAULTS['lora_rank']}.")
    parser.add_argument("--lora-alpha", type=int, default=None, help="Default: 2 x --lora-rank.")
    parser.add_argument("--lr", type=float, default=None, help=f"Default: {DEFAULTS['lr']}.")
    parser.add_argument("--seed", type=int, default=None, help=f"Default: {DEFAULTS['seed']}.")
    parser.add_argument("--precision", choices=["bf16", "fp16", "fp32"], default=None)
    parser.add_argument(
        "--trl-checkpointing",
        choices=["default", "match"],
        default=None,
        help="TRL's activation checkpointing: TRL 1.16's default (on), or prefkit's setting. Default: "
        "'default' without --config, 'match' with one.",
    )
    parser.add_argument(
        "--bound",
        type=int,
        nargs="?",
        const=2,
        default=0,
        metavar="STEPS",
        help="Also measure prefkit's step against its matmul-replay bound, over STEPS (2) more steps: "
        "costs those steps and six replays of their matmuls.",
    )
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

    args.explicit = sorted(name for name in DEFAULTS if getattr(args, name) is not None)
    settings = {**DEFAULTS, "trl_checkpointing": "default", **PLAIN_RACE}
    if args.config:
        settings |= read_config(args.config)
    for name, value in settings.items():
        if name not in args.explicit:
            setattr(args, name, value)
    if args.lora_alpha is None:
        args.lora_alpha = 2 * args.lora_rank
    if not args.model:
        parser.error(f"{args.config} names no model_name_or_path: give --model")
    for method in args.methods.split(","):
        if method not in METHODS:
            hint = " (TRL 1.16 removed kto_pair)" if method == "kto_pair" else ""
            parser.error(f"method {method!r}: the race has {', '.join(METHODS)}{hint}")
    if args.steps <= args.warmup:
        parser.error(f"--steps {args.steps}: the race times the steps after --warmup {args.warmup}")
    if args.length is not None and not args.data:
        parser.error("--length lengthens a data file's pairs: the YAML names datasets, so give --data FILE")
    account_options(args)

    import torch

    from prefkit.env import cpu_bf16_native

    if args.precision is None:
        args.precision = "bf16" if torch.cuda.is_available() or cpu_bf16_native() else "fp32"
    if args.length is not None:
        args.cutoff = args.length  # the pairs are built to fit it: nothing is truncated on either side
    return args


def race(args: argparse.Namespace, method: str, passed: list[str], ceiling: dict[str, float], n: int) -> dict:
    """One race: each side in its own process, then the figures that compare them."""
    ours = run_side("prefkit", method, passed)
    theirs = run_side("trl", method, passed)
    flops = (FLOPS_PER_TOKEN[method] + (FULL_EXTRA if args.finetuning_type == "full" else 0)) * n
    rate = ceiling[args.precision] * 1e9
    run = {
        "method": method,
        "prefkit": ours,
        "trl": theirs,
        "speedup": round(ours["tokens_per_second"] / theirs["tokens_per_second"], 3),
        "memory_ratio": round(ours["peak_memory_gib"] / theirs["peak_memory_gib"], 3),
        "training_memory_ratio": round(training_memory(ours) / training_memory(theirs), 3),
        "loss_diff": abs(ours["step1_loss"] - theirs["step1_loss"]),
        "ceiling_fraction": round(ours["computed_tokens_per_second"] * flops / rate, 3),
        "trained_tokens_ceiling_fraction": round(ours["tokens_per_second"] * flops / rate, 3),
    }
    if "bound" in ours:
        bound_rate = ours["bound"]["computed_tokens_per_matmul_second"]
        run["bound_ceiling_fraction"] = round(bound_rate * flops / rate, 3)
        run["bound_fraction"] = round(ours["computed_tokens_per_second"] / bound_rate, 3)
    return run


def training_memory(side: dict[str, Any]) -> float:
    """What training added to a side's memory: its peak over what it held when training began (the model
    and the data, and the libraries, which both sides load alike). A peak reached before training (the
    data's preparation) would count as training's; the JSON keeps both figures."""
    return max(side["peak_memory_gib"] - side["memory_at_start_gib"], 1e-3)


def print_table(
    args: argparse.Namespace, runs: list[dict[str, Any]], ceiling: dict[str, float], n: int
) -> None:
    print(f"\nceiling: {ceiling} GFLOP/s; {n / 1e6:.0f}M parameters; {args.precision}")
    print(
        f"{'method':8} {'prefkit tok/s':>13} {'TRL tok/s':>10} {'speedup':>8} {'prefkit GiB':>11} "
        f"{'TRL GiB':>8} {'mem ratio':>9} {'training':>8} "
        f"{'prefkit loss1':>13} {'TRL loss1':>10} {'ceiling':>8} {'bound':>6}"
    )
    for r in runs:
        ours, theirs = r["prefkit"], r["trl"]
        print(
            f"{r['method']:8} {ours['tokens_per_second']:>13} {theirs['tokens_per_second']:>10} "
            f"{r['speedup']:>8} {ours['peak_memory_gib']:>11} {theirs['peak_memory_gib']:>8} "
            f"{r['memory_ratio']:>9} {r['training_memory_ratio']:>8} "
            f"{ours['step1_loss']:>13.6f} {theirs['step1_loss']:>10.6f} "
            f"{r['ceiling_fraction']:>8} {r.get('bound_fraction', '-'):>6}"
        )
    if runs:
        sides = {side: runs[0][side]["activation_checkpointing"] for side in ("prefkit", "trl")}
        print(f"activation checkpointing: {sides} (--trl-checkpointing {args.trl_checkpointing})")
    over = {r["method"]: r["trl"]["rows_over_cutoff"] for r in runs if r["trl"].get("rows_over_cutoff")}
    if over:
        print(f"rows longer than the cutoff ({args.cutoff}), which each side cuts its own way: {over}")


def print_accounting(args: argparse.Namespace) -> None:
    """What became of each key the YAML sets; what could not be raced first and loudest."""
    for group, title in (
        ("not_raced", "NOT RACED (left out on both sides)"),
        ("prefkit_only", "prefkit's side only"),
        ("set_by_race", "set by the race"),
        ("overridden", "replaced by options on the command line"),
        ("raced", "raced on both sides"),
    ):
        entries = args.accounting.get(group)
        if entries:
            print(f"{args.config}: {title}:")
            for key, why in entries.items():
                print(f"  {key}: {why}")
    for warning in args.accounting["loader_warnings"]:
        print(f"prefkit's loader: {warning}")


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
    if args.config:
        print_accounting(args)
    load_before = os.getloadavg()[0]  # other work on the machine skews both sides' figures
    ceiling = matmul_ceiling(device)
    n = parameters(args.model, args.cache_dir)
    runs = []
    # --length: the pairs both sides train on, for this race (removed after it, or at exit if a side fails).
    lengthened = tempfile.TemporaryDirectory()
    if args.length is not None:
        passed += ["--data", str(write_lengthened_pairs(args, Path(lengthened.name)))]
    for method in args.methods.split(","):
        runs.append(race(args, method, passed, ceiling, n))
        print(json.dumps(runs[-1]), flush=True)
    lengthened.cleanup()
    internal = {"side", "method", "output", "explicit", "accounting", "yaml_arguments"}
    report = {
        "ceiling_gflops": ceiling,
        "parameters": n,
        "machine": machine(),
        "settings": {k: v for k, v in vars(args).items() if k not in internal},
        "command": "python benchmarks/vs_trl.py " + " ".join(sys.argv[1:]),
        # What makes the two sides' work the same (see _keep_template_ending).
        "same_sequences": "TRL's CPO/ORPO EOS append skipped for replies whose chat template closed the turn",
        "load_average_before": load_before,
        "date": dt.date.today().isoformat(),
        "runs": runs,
    }
    if args.config:
        report["config"] = {"file": args.config, **args.accounting}
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / f"{device}-{report['date']}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print_table(args, runs, ceiling, n)
    if args.config and args.accounting["not_raced"]:
        print(f"NOT RACED from {args.config}: {', '.join(args.accounting['not_raced'])} (see above)")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
