"""Reference-overlap scores of a reply: ROUGE-L and BLEU against the chosen reply, and whether the reply
is nearer the chosen reply than the rejected one. Both libraries are used as published (rouge-score,
sacrebleu); only the tokenisation is prefkit's (:mod:`prefkit.evaluate.text`), so Japanese is split into
morphemes rather than dropped (rouge-score) or treated as one word per sentence (sacrebleu's 13a).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from prefkit.evaluate.text import RougeTokenizer, words


@functools.cache
def _rouge() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=RougeTokenizer())


def rouge_l(reply: str, reference: str) -> float:
    """ROUGE-L F1 (longest common subsequence of words) of ``reply`` against ``reference``, in [0, 1]."""
    return float(_rouge().score(reference, reply)["rougeL"].fmeasure)


def _joined(text: str) -> str:
    return " ".join(words(text))


def sentence_bleu(reply: str, reference: str) -> float:
    """sacrebleu's sentence BLEU (0-100, exponential smoothing) on prefkit's word tokens."""
    import sacrebleu

    return float(sacrebleu.sentence_bleu(_joined(reply), [_joined(reference)], tokenize="none").score)


def corpus_bleu(replies: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu's corpus BLEU (0-100) of the replies against one reference each: the standard aggregate
    (n-gram counts pooled over the corpus, not a mean of sentence scores)."""
    import sacrebleu

    if not replies:
        return 0.0
    hyps = [_joined(r) for r in replies]
    refs = [_joined(r) for r in references]
    return float(sacrebleu.corpus_bleu(hyps, [refs], tokenize="none").score)


def closer_to_chosen(reply: str, chosen: str, rejected: str) -> float:
    """1.0 when the reply's ROUGE-L F1 against the chosen reply is higher than against the rejected one,
    0.0 otherwise (a tie, e.g. a reply sharing no word with either, counts as not closer)."""
    return 1.0 if rouge_l(reply, chosen) > rouge_l(reply, rejected) else 0.0
