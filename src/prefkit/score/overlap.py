"""Reference-overlap scores of a reply: ROUGE-L and BLEU against the chosen reply, and whether the reply
is nearer the chosen reply than the rejected one.

* ROUGE-L is rouge-score's, with Porter stemming (``use_stemmer=True``, the usual setting) and prefkit's
  words (:mod:`prefkit.score.text`): for plain ASCII English exactly rouge-score's own figure; Japanese
  is split into morphemes rather than dropped (rouge-score's tokenizer keeps ASCII only, so any two
  Japanese texts would score 0), and accented letters are kept.
* BLEU is sacreBLEU's, computed as sacreBLEU computes it -- cased, unstemmed, its ``13a`` tokenizer for
  English and ``ja-mecab`` (MeCab with the IPA dictionary) for Japanese, chosen by the reference's
  language -- so the figure can be set beside anyone else's sacreBLEU on the same data. The one step
  before it is prefkit's NFKC normalisation of both texts (full-width ``ＡＩ`` is ``AI``), which changes
  nothing in text that has no compatibility characters.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from prefkit.score.text import RougeTokenizer, language, normalise

# sacreBLEU's tokenizer for each language prefkit tells apart (see text.language)
BLEU_TOKENIZERS = {"en": "13a", "ja": "ja-mecab"}


@functools.cache
def _rouge() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=RougeTokenizer())


def rouge_l(reply: str, reference: str) -> float:
    """ROUGE-L F1 (longest common subsequence of words) of ``reply`` against ``reference``, in [0, 1]."""
    return float(_rouge().score(reference, reply)["rougeL"].fmeasure)


def bleu_tokenizer(reference: str) -> str:
    """The sacreBLEU tokenizer for a reference: ``ja-mecab`` for Japanese, ``13a`` otherwise."""
    return BLEU_TOKENIZERS[language(reference)]


@functools.cache
def _sacrebleu_tokenizer(name: str) -> Any:
    from sacrebleu.metrics.bleu import BLEU

    return BLEU(tokenize=name).tokenizer


def _tokenised(text: str, tokenizer: str) -> str:
    return _sacrebleu_tokenizer(tokenizer)(normalise(text).strip())


def sentence_bleu(reply: str, reference: str) -> float:
    """sacreBLEU's sentence BLEU (0-100, its default exponential smoothing) of ``reply`` against
    ``reference``, with the reference language's tokenizer."""
    import sacrebleu

    tokenizer = bleu_tokenizer(reference)
    return float(sacrebleu.sentence_bleu(normalise(reply), [normalise(reference)], tokenize=tokenizer).score)


def corpus_bleu(replies: Sequence[str], references: Sequence[str]) -> float:
    """sacreBLEU's corpus BLEU (0-100) of the replies against one reference each: n-gram counts pooled
    over the corpus, the standard aggregate. Each pair is tokenised as sacreBLEU tokenises its reference's
    language, so a one-language set gives exactly ``sacrebleu.corpus_bleu(..., tokenize=13a|ja-mecab)``
    of the NFKC-normalised texts, and a mixed set pools the two."""
    import sacrebleu

    if not replies:
        return 0.0
    tokenizers = [bleu_tokenizer(r) for r in references]
    hyps = [_tokenised(h, t) for h, t in zip(replies, tokenizers, strict=True)]
    refs = [_tokenised(r, t) for r, t in zip(references, tokenizers, strict=True)]
    return float(sacrebleu.corpus_bleu(hyps, [refs], tokenize="none").score)


def closer_to_chosen(reply: str, chosen: str, rejected: str) -> float:
    """1.0 when the reply's ROUGE-L F1 against the chosen reply is higher than against the rejected one,
    0.0 otherwise (a tie, e.g. a reply sharing no word with either, counts as not closer)."""
    return 1.0 if rouge_l(reply, chosen) > rouge_l(reply, rejected) else 0.0
