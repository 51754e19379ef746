"""A pairwise judge: any OpenAI-compatible chat endpoint says, prompt by prompt, whether the model's reply
or the baseline's is better.

Judges prefer whichever reply they are shown first (or second) more often than its quality warrants, so
each pair is asked in both orders. A reply wins a prompt only when the judge picks it in both orders;
when the two answers disagree (the order decided, not the replies) or cannot be read, the prompt is a
tie. ``judge/win_rate`` counts a tie as half a win; ``judge/position_consistency`` is the share of
prompts whose two answers agree, the guard on the judge itself: near 0.5 the judge is mostly answering
by position and its win rate says little.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prefkit.errors import PrefkitError

DEFAULT_CRITERIA = (
    "Which reply is better for the user: does it stay on the subject of the message, is it correct, and "
    "does it help the user?"
)
_VERDICT = re.compile(r"\b([AB])\b")


class JudgeError(PrefkitError):
    """The judge endpoint cannot be reached or answered with an error."""


@dataclass(frozen=True)
class JudgeSettings:
    url: str  # the endpoint's base URL, e.g. http://127.0.0.1:8000/v1
    model: str
    api_key: str | None = None  # else $OPENAI_API_KEY, else a placeholder (local servers need none)
    criteria: str = DEFAULT_CRITERIA
    timeout: float = 60.0


def judge_messages(prompt: str, reply_a: str, reply_b: str, criteria: str) -> list[dict[str, str]]:
    return [
        {
            "role": "system",
            "content": "You compare two replies to a user's message. " + criteria + " Answer with one "
            "letter only: A if reply A is better, B if reply B is better.",
        },
        {
            "role": "user",
            "content": f"Message:\n{prompt}\n\nReply A:\n{reply_a}\n\nReply B:\n{reply_b}\n\n"
            "Better reply (A or B):",
        },
    ]


def parse_verdict(text: str | None) -> str | None:
    """'A', 'B', or None when the answer names neither (or both) first."""
    match = _VERDICT.search((text or "").strip().upper())
    return match.group(1) if match else None


def _client(settings: JudgeSettings) -> Any:
    from openai import OpenAI

    key = settings.api_key or os.environ.get("OPENAI_API_KEY") or "not-needed"
    return OpenAI(base_url=settings.url, api_key=key, timeout=settings.timeout, max_retries=1)


def judge_pairs(
    prompts: Sequence[str],
    baseline: Sequence[str],
    model: Sequence[str],
    settings: JudgeSettings,
    on_prompt: Callable[[int], None] | None = None,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """(summary metrics, per-prompt verdicts) of the model's replies against the baseline's."""
    import openai

    client = _client(settings)

    def ask(prompt: str, a: str, b: str) -> tuple[str | None, str]:
        try:
            response = client.chat.completions.create(
                model=settings.model,
                messages=judge_messages(prompt, a, b, settings.criteria),
                temperature=0,
                max_tokens=8,
            )
        except openai.APIError as err:
            raise JudgeError(f"the judge at {settings.url} (model {settings.model}) failed: {err}") from err
        text = response.choices[0].message.content or ""
        return parse_verdict(text), text

    verdicts = []
    for prompt, before, after in zip(prompts, baseline, model, strict=True):
        first, first_text = ask(prompt, before, after)  # the model's reply is B
        second, second_text = ask(prompt, after, before)  # the model's reply is A
        model_first = {"A": "baseline", "B": "model"}.get(first or "")
        model_second = {"A": "model", "B": "baseline"}.get(second or "")
        consistent = model_first is not None and model_first == model_second
        winner = model_first if consistent else "tie"
        verdicts.append({"winner": winner, "consistent": consistent, "answers": [first_text, second_text]})
        if on_prompt is not None:
            on_prompt(1)
    n = len(verdicts) or 1
    wins = sum(v["winner"] == "model" for v in verdicts)
    losses = sum(v["winner"] == "baseline" for v in verdicts)
    ties = len(verdicts) - wins - losses
    summary = {
        "judge/win_rate": (wins + 0.5 * ties) / n,
        "judge/wins": float(wins),
        "judge/losses": float(losses),
        "judge/ties": float(ties),
        "judge/position_consistency": sum(v["consistent"] for v in verdicts) / n,
    }
    return summary, verdicts
