"""What an evaluation writes: ``eval.json`` (every metric and setting), ``eval.md`` (a table with the
baseline beside the model and each gameable score's guard beside it, then sample replies) and
``generations.jsonl`` (every prompt, reply and score). Files are written atomically, and an existing
evaluation is never overwritten unless the caller says so."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prefkit.errors import PrefkitError
from prefkit.score.guards import FLAGS
from prefkit.train.run.folder import write_json_atomic, write_text_atomic

OUTPUT_FILES = ("eval.json", "eval.md", "generations.jsonl")

# Every score that can rise while the replies get worse, with the scores that would show it.
GUARDS: dict[str, tuple[tuple[str, ...], str]] = {
    "accuracy": (
        ("relevance", "rouge_l"),
        "preferring the chosen replies of given pairs says nothing of what the model itself writes",
    ),
    "margin": (("logps_per_token/chosen",), "a margin also grows when both replies become less likely"),
    "rewards/margins": (("logps/chosen",), "a reward margin also grows when both replies become less likely"),
    "rewards/accuracies": (("relevance", "rouge_l"), "as for accuracy"),
    "socratic": (
        ("relevance", "rouge_l"),
        "any reply ending in a question passes, on the prompt's subject or not",
    ),
    "relevance": (
        ("prompt_copy", "duplicate"),
        "a reply that copies the prompt's words scores high; so does one frame with the subject swapped in",
    ),
    "rouge_l": (("length_words", "repeated_4gram_share"), "longer or looping replies match more words"),
    "bleu": (("length_words", "repeated_4gram_share"), "as for ROUGE-L"),
    "closer_to_chosen": (("relevance",), "a reply in the chosen replies' style but off the subject passes"),
    "length_words": (("repeated_4gram_share", "distinct_2"), "length alone can be loops"),
    "relevance_precision": (("relevance_coverage",), "a reply that says almost nothing is never off topic"),
    "judge/win_rate": (("judge/position_consistency",), "a judge answering by position"),
}
USER_SCORER_GUARD = (("relevance", "rouge_l"), "a style rewarded whatever the reply is about")

PREFERENCE_ROWS = (
    "accuracy",
    "margin",
    "logps/chosen",
    "logps/rejected",
    "logps_per_token/chosen",
    "logps_per_token/rejected",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
)
GENERATION_ROWS = (
    "relevance",
    "relevance_precision",
    "relevance_coverage",
    "rouge_l",
    "bleu",
    "closer_to_chosen",
    "length_words",
    "length_ratio",
    "length_tokens",
    "length_chars",
    "distinct_1",
    "distinct_2",
    "repeated_4gram_share",
    "prompt_copy",
)


class EvalOutputError(PrefkitError):
    pass


def check_output_dir(output_dir: Path, force: bool) -> None:
    """Refuse, before any work, to replace an earlier evaluation in ``output_dir`` without ``force``."""
    existing = [name for name in OUTPUT_FILES if (output_dir / name).exists()]
    if existing and not force:
        raise EvalOutputError(
            f"{output_dir} already holds an evaluation ({', '.join(existing)}); prefkit will not "
            "overwrite it: choose another --output-dir, or pass --force to replace it"
        )
    if output_dir.exists() and not output_dir.is_dir():
        raise EvalOutputError(f"--output-dir {output_dir} is a file, not a folder")


def guard_for(metric: str) -> tuple[tuple[str, ...], str] | None:
    if metric in GUARDS:
        return GUARDS[metric]
    if metric not in GENERATION_ROWS and metric not in PREFERENCE_ROWS and not metric.startswith("judge/"):
        return USER_SCORER_GUARD  # a style or user scorer
    return None


def format_cell(value: Any) -> str:
    """A value as a Markdown table cell: numbers to 3 decimals, missing ones as —, lists as JSON."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _rows(metrics: Mapping[str, Any], baseline: Mapping[str, Any] | None, names: Sequence[str]) -> list[str]:
    lines = []
    for name in names:
        if name not in metrics and not (baseline and name in baseline):
            continue
        guard = guard_for(name)
        guard_text = f"{', '.join(guard[0])}: {guard[1]}" if guard else ""
        if baseline is not None:
            b, m = baseline.get(name), metrics.get(name)
            delta = f"{m - b:+.3f}" if isinstance(b, float) and isinstance(m, float) else ""
            lines.append(f"| {name} | {format_cell(b)} | {format_cell(m)} | {delta} | {guard_text} |")
        else:
            lines.append(f"| {name} | {format_cell(metrics.get(name))} | {guard_text} |")
    return lines


def _table(title: str, metrics: Mapping[str, Any], baseline: Mapping[str, Any] | None, names: Sequence[str]):
    head = (
        ["| metric | baseline | model | change | guarded by |", "| --- | --- | --- | --- | --- |"]
        if baseline is not None
        else ["| metric | model | guarded by |", "| --- | --- | --- |"]
    )
    rows = _rows(metrics, baseline, names)
    return [f"## {title}", "", *head, *rows, ""] if rows else []


def markdown_report(
    report: Mapping[str, Any], generations: Sequence[Mapping[str, Any]], samples: int = 6
) -> str:
    s = report["settings"]
    model, baseline = report["model"], report.get("baseline")
    title = str(s["model"] or f"replies in {s.get('replies')}") + (
        f" + {s['adapter']}" if s.get("adapter") else ""
    )
    lines = [f"# prefkit eval: {title}", ""]
    lines.append(f"Data: {', '.join(s['data'])} ({s['pairs']} pairs). " + _replies_line(s))
    if baseline is not None:
        lines.append("")
        lines.append(_baseline_line(s))
    lines.append("")
    lines += _table(
        "Preference (held-out pairs)",
        model["preference"],
        baseline["preference"] if baseline else None,
        PREFERENCE_ROWS,
    )
    gen_names = [*GENERATION_ROWS, *(k for k in model["generation"] if k not in GENERATION_ROWS)]
    lines += _table(
        "Generation (the replies)",
        model["generation"],
        baseline["generation"] if baseline else None,
        gen_names,
    )
    lines += _guards_section(report)
    lines += _language_table(model, baseline)
    if report.get("judge"):
        lines += _table(
            "Judge (model vs baseline, both orders)", report["judge"], None, list(report["judge"])
        )
    lines += ["## Sample replies", ""]
    for g in generations[:samples]:
        lines += [f"**{g['prompt']}**", "", f"- chosen: {g.get('chosen') or '—'}"]
        if "baseline_reply" in g:
            lines.append(f"- baseline{_flags(g.get('baseline_flags'))}: {g['baseline_reply']}")
        lines += [f"- model{_flags(g.get('flags'))}: {g['reply']}", ""]
    lines.append("Every reply with its scores is in generations.jsonl.")
    return "\n".join(lines) + "\n"


def _flags(flags: Sequence[str] | None) -> str:
    return f" [{', '.join(flags)}]" if flags else ""


def _replies_line(s: Mapping[str, Any]) -> str:
    if s.get("replies"):
        return (
            f"Replies read from {s['replies']}: {s['replies_scored']} of the {s['prompts']} prompts answered."
        )
    sampling = s["sampling"]
    return (
        f"{s['replies_scored']} replies generated, {'sampled' if sampling['do_sample'] else 'greedy'}, "
        f"at most {sampling['max_new_tokens']} new tokens."
    )


def _baseline_line(s: Mapping[str, Any]) -> str:
    if s.get("baseline_replies"):
        return f"Baseline: the replies in {s['baseline_replies']}."
    if s.get("started_from"):
        return (
            f"Baseline and reference: the model the run started from, the base with the adapter "
            f"{s['started_from']}."
        )
    return "Baseline and reference: the model the run started from, the base with the adapter switched off."


def _guards_section(report: Mapping[str, Any]) -> list[str]:
    failed = report.get("failed_guards") or []
    lines = ["## Guards", ""]
    lines.append("**Every guard passes.**" if not failed else "**Failed:** " + "; ".join(failed) + ".")
    lines += [
        "",
        "Share of each language's replies that carry a flag (limit in brackets; see docs/evaluation.md):",
        "",
    ]
    sides = [("model", report["model"])] + (
        [("baseline", report["baseline"])] if report.get("baseline") else []
    )
    languages = sorted({g["language"] for _, side in sides for g in side.get("guards", [])})
    head = "| flag | " + " | ".join(f"{name} {lang}" for name, _ in sides for lang in languages) + " |"
    lines += [head, "|" + " --- |" * (1 + len(sides) * len(languages))]
    for flag, (limit, meaning) in FLAGS.items():
        cells = []
        for _, side in sides:
            found = {g["language"]: g for g in side.get("guards", []) if g["guard"] == flag}
            for lang in languages:
                g = found.get(lang)
                cells.append("—" if g is None else f"{g['share']:.2f}" + (" ✗" if g["failed"] else ""))
        lines.append(f"| {flag} ({meaning}) [{limit:g}] | " + " | ".join(cells) + " |")
    return [*lines, ""]


LANGUAGE_ROWS = (
    "replies",
    "relevance",
    "rouge_l",
    "bleu",
    "length_ratio",
    "distinct_2_across",
    "chosen_distinct_2_across",
    "repeated_4gram_share",
    "prompt_copy",
)


def _language_table(model: Mapping[str, Any], baseline: Mapping[str, Any] | None) -> list[str]:
    sides = [("model", model)] + ([("baseline", baseline)] if baseline else [])
    by_side = {name: side.get("generation_by_language") or {} for name, side in sides}
    languages = sorted({lang for figures in by_side.values() for lang in figures})
    if not languages:
        return []
    columns = [(name, lang) for lang in languages for name, _ in reversed(sides)]
    lines = ["## By language", "", "| | " + " | ".join(f"{lang} {name}" for name, lang in columns) + " |"]
    lines.append("|" + " --- |" * (1 + len(columns)))
    for row in LANGUAGE_ROWS:
        cells = [format_cell(by_side[name].get(lang, {}).get(row)) for name, lang in columns]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def write_reports(output_dir: Path, report: dict[str, Any], generations: Sequence[dict[str, Any]]) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(
        output_dir / "generations.jsonl",
        "".join(json.dumps(g, ensure_ascii=False) + "\n" for g in generations),
    )
    write_text_atomic(output_dir / "eval.md", markdown_report(report, generations))
    write_json_atomic(output_dir / "eval.json", report)  # last: its presence means the others are complete
