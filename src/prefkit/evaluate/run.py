"""`prefkit eval`: a model (and adapter) on held-out preference pairs -- preference metrics, the model's
own replies scored, optionally the base model beside it and a judge -- written to eval.json, eval.md and
generations.jsonl."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import prefkit
from prefkit.data.examples import PreferenceExample
from prefkit.data.load import DataError, Source, _files, format_report_problems, parse_sources
from prefkit.data.tokenize import ChatEncoder
from prefkit.data.validate import check_files, usable_examples
from prefkit.env import cache_dir, cpu_bf16_fast
from prefkit.errors import PrefkitError
from prefkit.evaluate.generation import generate_samples, score_and_summarise
from prefkit.evaluate.judge import JudgeSettings, judge_pairs
from prefkit.evaluate.preference import RewardSettings, preference_metrics
from prefkit.evaluate.report import check_output_dir, write_reports
from prefkit.evaluate.scorers import Sample, resolve_scorers
from prefkit.generate import SamplingSettings
from prefkit.losses import LOSSES, LossParams
from prefkit.model_sources import resolve_first
from prefkit.models import load_tokenizer

logger = logging.getLogger(__name__)

DEFAULT_CUTOFF_LEN = 2048


@dataclass
class EvalResult:
    output_dir: Path
    report: dict[str, Any]
    generations: list[dict[str, Any]]


def load_pairs(
    files: Sequence[str | Path], encoder: ChatEncoder, max_samples: int | None
) -> list[PreferenceExample]:
    """Every pair of ``files`` (files or folders, ``builtin:NAME`` too), checked as training checks them:
    an unusable pair is an error naming its file and line, never silently dropped."""
    found = [Source(p) for f in files for p in (_files(f) if not str(f).startswith("builtin:") else [f])]
    parsed = parse_sources(found, "dpo")
    report = check_files(parsed, "dpo", encoder)
    if report.errors:
        raise DataError(
            f"{len(report.unusable)} of {report.records} pairs cannot be evaluated:\n"
            f"{format_report_problems(report)}",
            report,
        )
    pairs = [e for e in usable_examples(parsed, report) if isinstance(e, PreferenceExample)]
    if not pairs:
        raise DataError(f"no preference pairs in {', '.join(map(str, files))}")
    return pairs[:max_samples] if max_samples else pairs


def _run_config(adapter: str | None) -> dict[str, Any]:
    """The resolved config of the run that trained ``adapter`` (its training_config.json), or {}."""
    if not adapter:
        return {}
    path = Path(adapter) / "training_config.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("config", {}) or {}
    except (OSError, json.JSONDecodeError) as err:
        raise PrefkitError(f"{path}: not a readable training_config.json ({err})") from err


def reward_settings(run: dict[str, Any], pref_loss: str | None, beta: float | None) -> RewardSettings | None:
    method = pref_loss or (run.get("pref_loss") if run.get("stage", "dpo") == "dpo" else None)
    if method is None:
        return None
    if method not in LOSSES:
        raise PrefkitError(f"--pref-loss {method}: expected one of {', '.join(LOSSES)}")
    same_run = run.get("pref_loss") == method
    default_beta = 2.0 if method == "simpo" else 0.1
    beta = beta if beta is not None else (run.get("pref_beta") if same_run else None) or default_beta
    gamma = (run.get("simpo_gamma") if same_run else None) or (0.5 if method == "simpo" else 0.0)
    return RewardSettings(method, LossParams(beta=float(beta), gamma=float(gamma)))


@contextlib.contextmanager
def _baseline_of(model: Any) -> Iterator[Any]:
    with model.disable_adapter():
        yield model


def _generations(samples: Sequence[Sample], baseline: Sequence[Sample] | None) -> list[dict[str, Any]]:
    rows = []
    for i, s in enumerate(samples):
        row: dict[str, Any] = {
            "prompt": s.prompt,
            "chosen": s.chosen,
            "rejected": s.rejected,
            "reply": s.reply,
        }
        row["scores"] = s.scores
        if baseline is not None:
            row["baseline_reply"] = baseline[i].reply
            row["baseline_scores"] = baseline[i].scores
        rows.append(row)
    return rows


def evaluate_model(
    model: str | None,
    data: Sequence[str | Path],
    *,
    adapter: str | None = None,
    output_dir: str | Path = "prefkit-eval",
    max_samples: int | None = None,
    generate_samples_n: int | None = None,
    scorers: Sequence[str] = (),
    sampling: SamplingSettings | None = None,
    baseline: bool = False,
    judge: JudgeSettings | None = None,
    pref_loss: str | None = None,
    beta: float | None = None,
    template: str | None = None,
    cutoff_len: int | None = None,
    batch_size: int = 8,
    force: bool = False,
    progress: bool = True,
) -> EvalResult:
    """Evaluate ``model`` (+ ``adapter``) on the preference pairs of ``data``; see the module docstring.
    ``model`` may be None when the adapter's run names its base model.

    ``max_samples`` caps the pairs; ``generate_samples_n`` caps the prompts replied to (default: all
    evaluated pairs). ``baseline`` also evaluates the base model (the adapter switched off) on the same
    pairs and prompts. ``judge`` (needs ``baseline``) asks an OpenAI-compatible endpoint which reply is
    better, in both orders."""
    import torch
    from transformers import AutoModelForCausalLM

    started = time.perf_counter()
    output_dir = Path(output_dir)
    check_output_dir(output_dir, force)
    if baseline and not adapter:
        raise PrefkitError(
            "--baseline compares the model with its base (the adapter switched off): it needs --adapter"
        )
    if judge is not None and not baseline:
        raise PrefkitError("--judge-url compares the model's replies with the baseline's: add --baseline")
    sampling = sampling or SamplingSettings(max_new_tokens=128)
    named_scorers = resolve_scorers(scorers)  # unknown names fail before any model is loaded

    run = _run_config(adapter)
    model = model or run.get("model_name_or_path")
    if not model:
        raise PrefkitError("name the base model with --model (the adapter's training_config.json names none)")
    rewards = reward_settings(run, pref_loss, beta)
    model_dir = resolve_first(model, cache_dir(None))
    tokenizer_dir = adapter if adapter and (Path(adapter) / "tokenizer_config.json").is_file() else model_dir
    tokenizer = load_tokenizer(tokenizer_dir)
    encoder = ChatEncoder(
        tokenizer,
        template if template is not None else run.get("template"),
        cutoff_len or run.get("cutoff_len") or DEFAULT_CUTOFF_LEN,
    )
    pairs = load_pairs(data, encoder, max_samples)
    prompts = pairs[:generate_samples_n] if generate_samples_n else pairs

    dtype = torch.bfloat16 if (torch.cuda.is_available() or cpu_bf16_fast()) else torch.float32
    loaded = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    if torch.cuda.is_available():
        loaded = loaded.to("cuda")
    if adapter:
        from peft import PeftModel

        from prefkit.models import peft_wrapping

        with peft_wrapping():
            loaded = PeftModel.from_pretrained(loaded, adapter)
    loaded.eval()

    def measure(m: Any, label: str) -> tuple[dict[str, Any], list[Sample]]:
        logger.info("%s: preference metrics on %d pairs", label, len(pairs))
        pref = preference_metrics(m, encoder, pairs, batch_size=batch_size, rewards=rewards)
        samples = generate_samples(
            m,
            encoder,
            prompts,
            settings=sampling,
            batch_size=batch_size,
            progress=label if progress else None,
        )
        return {"preference": pref, "generation": score_and_summarise(samples, named_scorers)}, samples

    model_metrics, samples = measure(loaded, "model")
    base_metrics = base_samples = None
    if baseline:
        with _baseline_of(loaded) as base:
            base_metrics, base_samples = measure(base, "baseline")
            if rewards is not None and LOSSES[rewards.pref_loss].needs_reference:
                # Against itself the reference gives zero rewards: leave them out rather than print zeros.
                base_metrics["preference"] = {
                    k: v for k, v in base_metrics["preference"].items() if not k.startswith("rewards/")
                }
    judged = None
    generations = _generations(samples, base_samples)
    if judge is not None and base_samples is not None:
        judged, verdicts = judge_pairs(
            [s.prompt for s in samples], [s.reply for s in base_samples], [s.reply for s in samples], judge
        )
        for row, verdict in zip(generations, verdicts, strict=True):
            row["judge"] = verdict

    report = {
        "prefkit_version": prefkit.__version__,
        "settings": {
            "model": model,
            "adapter": adapter,
            "data": [str(d) for d in data],
            "pairs": len(pairs),
            "prompts": len(prompts),
            "sampling": asdict(sampling),
            "scorers": [name for name, _ in named_scorers],
            "rewards": {"pref_loss": rewards.pref_loss, **asdict(rewards.params)} if rewards else None,
            "baseline": baseline,
            "judge": {"url": judge.url, "model": judge.model, "criteria": judge.criteria} if judge else None,
            "template": template or run.get("template"),  # None: the tokenizer's own
            "cutoff_len": encoder.cutoff_len,
            "dtype": str(dtype).removeprefix("torch."),
        },
        "model": model_metrics,
        "baseline": base_metrics,
        "judge": judged,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_reports(output_dir, report, generations)
    return EvalResult(output_dir, report, generations)
