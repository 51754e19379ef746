"""Relevance: whether a reply talks about the subject of its prompt, and covers it.

Definition. The *topic* ``T`` of a held-out example is the set of content words (:func:`content_words`:
nouns, verbs and adjectives in their dictionary form for Japanese; stemmed words outside a stop list for
English) of its prompt and, where the example has one, of its chosen reply: the subject as the learner
named it and as a good reply takes it up. The rejected reply is not part of it -- it is what training
should move away from, so a reply that reproduces it must not count as on topic for its words. With
``R`` the reply's distinct content words and ``idf(w) = ln((1 + N) / (1 + df(w))) + 1`` over the ``N``
topics of the evaluated set::

    precision = idf(R & T) / idf(R)     how much of what the reply talks about is the subject
    coverage  = idf(R & T) / idf(T)     how much of the subject the reply takes up
    relevance = 2 * precision * coverage / (precision + coverage)       (0 when R & T is empty)

where ``idf(S)`` is the sum over the words of ``S``. A word in no topic (``pizza`` in a reply about
stacks) weighs most against precision; a word every topic shares (``data``) counts little either way.

Precision alone scored a one-word reply ("Lifo?") 1.0 and a fixed frame with the subject's name swapped in
(「ブランドセーフティは、どうなるでしょうか？」) as high as a real question: saying almost nothing was never
off topic. Coverage makes a reply earn relevance by taking up the subject: a short on-topic question
that uses two or three of the topic's words scores well below the chosen reply itself (which covers
all of its own words) and well above a reply about something else.

What it catches: replies about something else, empty replies (0), replies in another language than the
prompt's (0: no shared words), replies that say almost nothing (low coverage), answer dumps in the
rejected replies' words (low precision). What it does not: a reply that copies the prompt's words
(guarded by prompt copy); an on-topic reply that uses words found in neither the prompt nor the chosen
reply (an analogy, a synonym) scores low. tests/fixtures/relevance_labelled.jsonl is a hand-labelled set
of on-topic, off-topic and gamed replies in both languages that tests/test_eval_scorers.py checks it
separates (docs/evaluation.md gives the figures).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from prefkit.score.text import content_words


@dataclass(frozen=True)
class Relevance:
    precision: float
    coverage: float

    @property
    def f1(self) -> float:
        total = self.precision + self.coverage
        return 2 * self.precision * self.coverage / total if total else 0.0


def topic_words(*texts: str | None) -> frozenset[str]:
    return frozenset(w for t in texts if t for w in content_words(t))


def inverse_document_frequency(topics: Sequence[frozenset[str]]) -> dict[str, float]:
    """Smoothed IDF of every word of ``topics``; a word in none of them gets :func:`unseen_idf`."""
    df = Counter(w for topic in topics for w in topic)
    n = len(topics)
    return {w: math.log((1 + n) / (1 + c)) + 1 for w, c in df.items()}


def unseen_idf(n_topics: int) -> float:
    return math.log(1 + n_topics) + 1


def relevance(reply: str, topic: frozenset[str], idf: dict[str, float], n_topics: int) -> Relevance:
    """Precision and coverage of the reply's distinct content words against ``topic`` (see above)."""
    said = set(content_words(reply))
    if not said or not topic:
        return Relevance(0.0, 0.0)
    default = unseen_idf(n_topics)

    def weight(ws: set[str] | frozenset[str]) -> float:
        return sum(idf.get(w, default) for w in ws)

    shared = weight(said & topic)
    return Relevance(shared / weight(said), shared / weight(topic))


def relevance_scores(
    replies: Sequence[str], prompts: Sequence[str], chosen: Sequence[str | None]
) -> list[Relevance]:
    """Relevance of each reply to its own example, with IDF taken over all the examples given."""
    topics = [topic_words(p, c) for p, c in zip(prompts, chosen, strict=True)]
    idf = inverse_document_frequency(topics)
    return [relevance(reply, topic, idf, len(topics)) for reply, topic in zip(replies, topics, strict=True)]
