"""The quickstart's reports: ``quickstart_report.md`` (the verdicts, the figures per language and over all
replies, the plots, every reply before and after with its scores and flags) and the lines the command
prints."""

from __future__ import annotations

from typing import Any

# (report key, label, format, the score that catches it being gamed)
REPORT_ROWS = (
    ("preference_accuracy", "preference accuracy (held-out pairs)", ".2f", "the verdicts"),
    ("preference_margin", "preference margin (per-token log-prob)", "+.3f", ""),
    ("style_score", "style score (replies that guide with a question)", ".2f", "relevance, the guards"),
    ("relevance", "relevance to the prompt (F1 of precision, coverage)", ".2f", "prompt copy, duplicates"),
    ("relevance_en", "relevance, English prompts", ".2f", ""),
    ("relevance_ja", "relevance, Japanese prompts", ".2f", ""),
    ("rouge_l", "ROUGE-L against the chosen reply", ".3f", "length, repetition"),
    ("closer_to_chosen", "closer to chosen than to rejected", ".2f", "relevance"),
    ("bleu", "BLEU against the chosen reply (sacreBLEU)", ".1f", "length, repetition"),
    ("length_words", "length (words)", ".1f", "repetition"),
    ("length_ratio", "length / the chosen reply's", ".2f", "short replies"),
    ("distinct_2", "distinct bigrams within a reply", ".2f", ""),
    ("repeated_4gram_share", "repeated 4-grams", ".3f", ""),
    ("prompt_copy", "prompt copy (trigrams said back)", ".2f", ""),
)
LANGUAGE_NAMES = {"en": "English", "ja": "Japanese"}
# (per-language key, label, format)
LANGUAGE_ROWS = (
    ("style_score", "style score", ".2f"),
    ("relevance", "relevance", ".2f"),
    ("rouge_l", "ROUGE-L", ".3f"),
    ("length_ratio", "length / chosen", ".2f"),
    ("distinct_replies", "distinct replies", ".0f"),
    ("distinct_2_across", "distinct bigrams across replies", ".2f"),
    ("repeated_4gram_share", "repeated 4-grams", ".3f"),
    ("prompt_copy", "prompt copy", ".2f"),
)


def verdict_lines(report: dict[str, Any]) -> list[str]:
    """One line per language: its verdict and why."""
    lines = []
    for lang, found in report["languages"].items():
        why = "; ".join(found["reasons"])
        lines.append(f"{LANGUAGE_NAMES.get(lang, lang)}: {found['verdict']}" + (f" -- {why}" if why else ""))
    return lines


def markdown_report(report: dict[str, Any]) -> str:
    b, a = report["before"], report["after"]
    langs = list(report["languages"])
    lines = [
        f"# prefkit quickstart: {report['model']} + LoRA, {report['method']}",
        "",
        f"Held out: {report['held_out_pairs']} pairs; replies (greedy, at most {report['max_new_tokens']} "
        f"new tokens) to {report['generation_prompts']} prompts.",
        "",
        "## Verdicts",
        "",
        *(f"- {line}" for line in verdict_lines(report)),
        "",
        "Targets: "
        + ("all met." if not report["missed_targets"] else "missed: " + "; ".join(report["missed_targets"])),
        "",
        "| per language | " + " | ".join(f"{lang} before | {lang} after" for lang in langs) + " |",
        "| --- |" + " --- | --- |" * len(langs),
    ]
    for key, label, fmt in LANGUAGE_ROWS:
        cells = [
            f"{report['languages'][lang][side][key]:{fmt}}" for lang in langs for side in ("before", "after")
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Guards failed before: {', '.join(report['guards']['before']) or 'none'}; "
        f"after: {', '.join(report['guards']['after']) or 'none'} (docs/evaluation.md#guards).",
        "",
        "| all replies | before | after | guarded by |",
        "| --- | --- | --- | --- |",
        *(f"| {label} | {b[k]:{fmt}} | {a[k]:{fmt}} | {guard} |" for k, label, fmt, guard in REPORT_ROWS),
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
        lines += [f"**{r['prompt']}**", "", f"- chosen (held out): {r['chosen']}"]
        for side in ("before", "after"):
            scores, flags = r[f"{side}_scores"], r[f"{side}_flags"]
            marks = f"; {', '.join(flags)}" if flags else ""
            lines.append(
                f"- {side} (relevance {scores['relevance']:.2f}, ROUGE-L {scores['rouge_l']:.2f}{marks}): "
                f"{r[side]}"
            )
        lines.append("")
    return "\n".join(lines)
