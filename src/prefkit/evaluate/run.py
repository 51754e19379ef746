"""`prefkit eval`: a model (and adapter) on held-out preference pairs -- preference metrics, the model's
own replies (or replies given in a file) scored and guarded, optionally the run's starting point beside
it and a judge -- written to eval.json, eval.md and generations.jsonl.

An adapter that ``prefkit train`` wrote is evaluated as it was trained: its run's
``training_config.json`` gives the base model, the chat template, ``cutoff_len``, the precision and the
quantisation, and the run's *starting point* -- the base model, or the adapter the run continued
(``adapter_name_or_path``, e.g. an SFT adapter before DPO). The starting point is the reference of the
implicit rewards and the ``--baseline``, as it was the reference during training.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import prefkit
from prefkit.data.examples import PreferenceExample
from prefkit.data.load import DataError, Source, _files, format_report_problems, parse_sources
from prefkit.data.tokenize import ChatEncoder
from prefkit.data.validate import check_files, usable_examples
from prefkit.engine import BASE_MODEL
from prefkit.errors import PrefkitError
from prefkit.evaluate.generation import generate_samples, score_replies
from prefkit.evaluate.guards import baseline_failures
from prefkit.evaluate.judge import JudgeSettings, judge_pairs
from prefkit.evaluate.preference import RewardSettings, preference_metrics
from prefkit.evaluate.replies import GivenReply, given_samples, match_replies, read_replies
from prefkit.evaluate.report import check_output_dir, write_reports
from prefkit.evaluate.scorers import Sample, Scorer, resolve_scorers
from prefkit.generate import SamplingSettings
from prefkit.inference import AdapterSpec, LoadedModel, adapter_active, load_for_inference
from prefkit.losses import LOSSES, LossParams
from prefkit.model.loader import dtype_name, run_dtype
from prefkit.models import REFERENCE_ADAPTER

logger = logging.getLogger(__name__)

DEFAULT_CUTOFF_LEN = 2048
TRAINED = "trained"  # the adapter names eval loads the run's adapters under
START = "start"


@dataclass
class EvalResult:
    output_dir: Path
    report: dict[str, Any]
    generations: list[dict[str, Any]]


def load_pairs(
    files: Sequence[str | Path], encoder: ChatEncoder | None, max_samples: int | None
) -> list[PreferenceExample]:
    """Every pair of ``files`` (files or folders, ``builtin:NAME`` too), checked as training checks them:
    an unusable pair is an error naming its file and line, never silently dropped. Without an encoder
    (replies given, no model) the token-length checks are left out."""
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


def run_config(adapter: str | None) -> dict[str, Any]:
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


def starting_adapter(adapter: str, run: dict[str, Any]) -> Path | None:
    """The adapter the run started from, or None when it started from the bare base model: the copy
    training saved beside the trained adapter (its ``reference`` adapter, for the losses that need one),
    else the folder the run's config names."""
    if not run.get("adapter_name_or_path"):
        return None
    saved = Path(adapter) / REFERENCE_ADAPTER
    if (saved / "adapter_config.json").is_file():
        return saved
    named = Path(run["adapter_name_or_path"]).expanduser()
    if not (named / "adapter_config.json").is_file():
        raise PrefkitError(
            f"the run in {adapter} started from the adapter {named}, which is gone: the evaluation needs it "
            "as the reference and the baseline (the model the run started from). Put it back, or evaluate "
            "the run as a model of its own with --model and no --adapter"
        )
    return named


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


def _generations(samples: Sequence[Sample], baseline: Sequence[Sample] | None) -> list[dict[str, Any]]:
    rows = []
    for i, s in enumerate(samples):
        row: dict[str, Any] = {
            "prompt": s.prompt,
            "chosen": s.chosen,
            "rejected": s.rejected,
            "reply": s.reply,
            "scores": s.scores,
            "flags": s.flags,
        }
        if baseline is not None:
            row["baseline_reply"] = baseline[i].reply
            row["baseline_scores"] = baseline[i].scores
            row["baseline_flags"] = baseline[i].flags
        rows.append(row)
    return rows


@dataclass
class Side:
    """One side of an evaluation (the model, or its baseline): what it is called and how its replies
    are had -- generated by the loaded model with one adapter active, or read from a file."""

    label: str
    adapter: str | None = None  # the adapter active while it is measured (BASE_MODEL: none)
    replies: list[GivenReply] | None = None


@dataclass
class Evaluation:
    """What both sides are measured with: the loaded model (None when only given replies are scored),
    the pairs and prompts, and how replies are scored."""

    loaded: LoadedModel | None
    encoder: ChatEncoder | None
    pairs: list[PreferenceExample]
    prompts: list[PreferenceExample]
    start: Path | None  # the adapter the run started from
    rewards: RewardSettings | None
    scorers: list[tuple[str, Scorer]]
    sampling: SamplingSettings
    guard_limits: dict[str, float] | None
    batch_size: int
    progress: bool

    def measure(self, side: Side) -> tuple[dict[str, Any], list[Sample]]:
        preference = None
        if self.loaded is not None and self.encoder is not None:
            preference = _preference(self, side)
        if side.replies is not None:
            samples = given_samples(match_replies(side.replies, self.prompts))
        else:
            assert self.loaded is not None and self.encoder is not None
            with _active(self.loaded, side.adapter):
                samples = generate_samples(
                    self.loaded.model,
                    self.encoder,
                    self.prompts,
                    settings=self.sampling,
                    batch_size=self.batch_size,
                    progress=side.label if self.progress else None,
                )
        scored = score_replies(samples, self.scorers, self.guard_limits)
        return {"preference": preference or {}, **scored.to_json()}, samples


def _check_sides(
    adapter: str | None,
    replies: str | Path | None,
    baseline_replies: str | Path | None,
    baseline: bool,
    judge: JudgeSettings | None,
) -> None:
    """Refuse, before any work, a combination of sides that cannot be evaluated."""
    if baseline and baseline_replies:
        raise PrefkitError(
            "--baseline generates the baseline's replies and --baseline-replies gives them: choose one"
        )
    if baseline and replies:
        raise PrefkitError(
            "--baseline generates the baseline's replies with the model, --replies reads the model's from a "
            "file: give the baseline's replies as --baseline-replies"
        )
    if baseline and not adapter:
        raise PrefkitError(
            "--baseline compares the model with the model its run started from: it needs --adapter"
        )
    if baseline_replies and not replies:
        raise PrefkitError("--baseline-replies needs --replies (the model's replies to compare them with)")
    if judge is not None and not (baseline or baseline_replies):
        raise PrefkitError("--judge-url compares the model's replies with the baseline's: add --baseline")


def _load_run_model(
    model: str, adapter: str | None, start: Path | None, run: dict[str, Any], template: str | None, dtype: str
) -> LoadedModel:
    """The base model with the trained adapter and the one its run started from, as the run trained
    them: its precision (unless ``dtype`` says otherwise), quantisation and remote-code setting."""
    adapters = [AdapterSpec(TRAINED, Path(adapter))] if adapter else []
    adapters += [AdapterSpec(START, start)] if start else []
    return load_for_inference(
        model,
        adapters,
        template=template,
        dtype=run_dtype(run.get("bf16"), run.get("fp16")) if dtype == "auto" and run else dtype,
        quantization_bit=run.get("quantization_bit"),
        trust_remote_code=bool(run.get("trust_remote_code")),
    )


def evaluate_model(
    model: str | None,
    data: Sequence[str | Path],
    *,
    adapter: str | None = None,
    replies: str | Path | None = None,
    baseline_replies: str | Path | None = None,
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
    dtype: str = "auto",
    guard_limits: dict[str, float] | None = None,
    batch_size: int = 8,
    force: bool = False,
    progress: bool = True,
) -> EvalResult:
    """Evaluate ``model`` (+ ``adapter``) on the preference pairs of ``data``; see the module docstring.
    ``model`` may be None when the adapter's run names its base model, or when ``replies`` are given and
    no preference metrics are wanted.

    ``replies`` scores the replies of a file (:mod:`prefkit.evaluate.replies`) instead of generating;
    ``baseline_replies`` gives the baseline's the same way. ``max_samples`` caps the pairs;
    ``generate_samples_n`` caps the prompts replied to (default: all evaluated pairs). ``baseline`` also
    evaluates the run's starting point on the same pairs and prompts. ``judge`` (needs a baseline) asks
    an OpenAI-compatible endpoint which reply is better, in both orders. ``dtype`` ``auto`` is the run's
    precision, else the machine's (:func:`prefkit.model.loader.pick_dtype`). ``guard_limits`` override
    the guards' limits (:data:`prefkit.evaluate.guards.FLAGS`)."""
    started = time.perf_counter()
    output_dir = Path(output_dir)
    check_output_dir(output_dir, force)
    _check_sides(adapter, replies, baseline_replies, baseline, judge)
    sampling = sampling or SamplingSettings(max_new_tokens=128)
    named_scorers = resolve_scorers(scorers)  # unknown names fail before any model is loaded
    given = read_replies(replies) if replies else None  # a bad file fails before any model is loaded
    given_baseline = read_replies(baseline_replies) if baseline_replies else None

    run = run_config(adapter)
    model = model or run.get("model_name_or_path")
    if not model and given is None:
        raise PrefkitError("name the base model with --model (the adapter's training_config.json names none)")
    start = starting_adapter(adapter, run) if adapter else None
    template = template if template is not None else run.get("template")
    loaded = _load_run_model(model, adapter, start, run, template, dtype) if model else None
    cutoff = cutoff_len or run.get("cutoff_len") or DEFAULT_CUTOFF_LEN
    encoder = ChatEncoder(loaded.tokenizer, template, cutoff) if loaded is not None else None
    pairs = load_pairs(data, encoder, max_samples)
    evaluation = Evaluation(
        loaded,
        encoder,
        pairs,
        pairs[:generate_samples_n] if generate_samples_n else pairs,
        start,
        reward_settings(run, pref_loss, beta) if model else None,
        named_scorers,
        sampling,
        guard_limits,
        batch_size,
        progress,
    )

    model_metrics, samples = evaluation.measure(Side("model", TRAINED if adapter else None, given))
    base_metrics = base_samples = None
    if baseline or given_baseline is not None:
        base_side = Side("baseline", START if start else BASE_MODEL, given_baseline)
        base_metrics, base_samples = evaluation.measure(base_side)
        if [s.prompt for s in base_samples] != [s.prompt for s in samples]:
            raise PrefkitError(
                f"{replies} and {baseline_replies} answer different prompts of the held-out data: give "
                "both sides replies to the same prompts"
            )
    failed = list(model_metrics["failed_guards"])
    if base_metrics is not None:
        failed += baseline_failures(
            model_metrics["generation_by_language"], base_metrics["generation_by_language"]
        )
    generations = _generations(samples, base_samples)
    judged = _judged(judge, samples, base_samples, generations)

    settings = {
        "model": model,
        "adapter": adapter,
        "started_from": str(start) if start else None,
        "replies": str(replies) if replies else None,
        "baseline_replies": str(baseline_replies) if baseline_replies else None,
        "data": [str(d) for d in data],
        "pairs": len(pairs),
        "prompts": len(evaluation.prompts),
        "replies_scored": len(samples),
        "sampling": asdict(sampling) if given is None else None,
        "scorers": [name for name, _ in named_scorers],
        "guard_limits": guard_limits or {},
        "rewards": _rewards_json(evaluation.rewards),
        "baseline": base_metrics is not None,
        "judge": {"url": judge.url, "model": judge.model, "criteria": judge.criteria} if judge else None,
        "template": template,  # None: the tokenizer's own
        "cutoff_len": cutoff if encoder else None,
        "dtype": dtype_name(loaded.dtype) if loaded else None,
        "quantization_bit": run.get("quantization_bit"),
    }
    report = {
        "prefkit_version": prefkit.__version__,
        "settings": settings,
        "model": model_metrics,
        "baseline": base_metrics,
        "failed_guards": failed,
        "judge": judged,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_reports(output_dir, report, generations)
    return EvalResult(output_dir, report, generations)


def _judged(
    judge: JudgeSettings | None,
    samples: Sequence[Sample],
    base_samples: Sequence[Sample] | None,
    generations: list[dict[str, Any]],
) -> dict[str, float] | None:
    """The judge's figures (and each prompt's verdict, into ``generations``), or None without a judge."""
    if judge is None or base_samples is None:
        return None
    judged, verdicts = judge_pairs(
        [s.prompt for s in samples], [s.reply for s in base_samples], [s.reply for s in samples], judge
    )
    for row, verdict in zip(generations, verdicts, strict=True):
        row["judge"] = verdict
    return judged


def _rewards_json(rewards: RewardSettings | None) -> dict[str, Any] | None:
    return {"pref_loss": rewards.pref_loss, **asdict(rewards.params)} if rewards else None


def _active(loaded: LoadedModel, adapter: str | None) -> Any:
    if adapter is None:
        return contextlib.nullcontext(loaded.model)
    return adapter_active(loaded.model, adapter)


def _preference(evaluation: Evaluation, side: Side) -> dict[str, float]:
    """Preference metrics of one side. The implicit rewards are against the run's starting point; the
    baseline, which is that starting point, has none (they would be zero by construction)."""
    loaded, rewards = evaluation.loaded, evaluation.rewards
    assert loaded is not None and evaluation.encoder is not None
    logger.info("%s: preference metrics on %d pairs", side.label, len(evaluation.pairs))
    reference: Callable[[], Any] | None = None
    if side.adapter == TRAINED:
        reference_name = START if evaluation.start else BASE_MODEL
        reference = lambda: adapter_active(loaded.model, reference_name)  # noqa: E731
    with _active(loaded, side.adapter):
        return preference_metrics(
            loaded.model,
            evaluation.encoder,
            evaluation.pairs,
            batch_size=evaluation.batch_size,
            rewards=rewards if reference is not None or not _needs_reference(rewards) else None,
            reference=reference,
        )


def _needs_reference(rewards: RewardSettings | None) -> bool:
    return rewards is not None and LOSSES[rewards.pref_loss].needs_reference
