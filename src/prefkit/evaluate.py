"""Evaluation: does the model prefer the chosen replies of held-out pairs, and does what it writes show
the taught preference?

* **Preference accuracy**: the share of held-out pairs whose chosen reply the model finds more likely
  per token than the rejected one (mean token log-prob, the quantity SimPO optimises, and one that
  needs no reference model, so a base model and any trained model are measured alike). The margin is
  the mean difference of those per-token log-probs.
* **Style score**: a scorer applied to the model's own greedy replies to held-out prompts. For the
  bundled Socratic-tutor data, the share of replies that guide the learner with a question: the reply
  ends with a question mark (``?`` or ``？``), as every chosen reply does and no rejected one does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from prefkit.data.collate import PreferenceCollator
from prefkit.data.examples import PreferenceExample
from prefkit.data.tokenize import ChatEncoder
from prefkit.logps import sequence_logps


@dataclass
class PreferenceEval:
    accuracy: float
    margin: float  # mean (chosen - rejected) per-token log-prob
    pairs: int


@torch.no_grad()
def preference_accuracy(
    model: Any, encoder: ChatEncoder, examples: Sequence[PreferenceExample], batch_size: int = 8
) -> PreferenceEval:
    collate = PreferenceCollator(encoder.tokenizer.pad_token_id)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    margins: list[float] = []
    for start in range(0, len(examples), batch_size):
        features = [encoder.encode_pair(e).to_features() for e in examples[start : start + batch_size]]
        batch = {k: v.to(device) for k, v in collate(features).items()}
        logps, counts, _ = sequence_logps(model, batch)
        per_token = logps / counts.clamp(min=1)
        half = len(features)
        margins += (per_token[:half] - per_token[half:]).float().tolist()
    model.train(was_training)
    return PreferenceEval(
        accuracy=sum(m > 0 for m in margins) / len(margins),
        margin=sum(margins) / len(margins),
        pairs=len(margins),
    )


# A question mark, then optionally closing quotes/brackets, at the very end of the reply.
_ENDS_WITH_QUESTION = re.compile(r"[?？][\"'”』」)）\]]*\s*$")


def guides_with_question(reply: str) -> bool:
    """The Socratic tutor's move: the reply hands the learner a question to think about."""
    return bool(_ENDS_WITH_QUESTION.search(reply))


SCORERS: dict[str, Callable[[str], bool]] = {"socratic": guides_with_question}


def style_score(replies: Sequence[str], scorer: str = "socratic") -> float:
    return sum(SCORERS[scorer](r) for r in replies) / len(replies) if replies else 0.0
