"""Relevance: how much of what a reply talks about is the subject of its prompt.

Definition. The *topic* of a held-out example is the set of content words (:func:`content_words`:
nouns, verbs and adjectives in their dictionary form for Japanese; stemmed words outside a stop list
for English) of its prompt and, where the example has them, of its chosen and rejected replies -- two
on-topic texts that name the subject in more words than a short question does. The relevance of a reply
is the IDF-weighted share of its distinct content words that belong to the topic::

    relevance = sum(idf(w) for w in R & T) / sum(idf(w) for w in R)      (0 when R is empty)

with ``R`` the reply's content words, ``T`` the topic, and ``idf(w) = ln((1 + N) / (1 + df(w))) + 1``
over the ``N`` topics of the evaluated set. A word that occurs in no topic (``pizza`` in a reply about
stacks) gets the highest weight, a word common to every topic of the set a low one, so a reply is not
on topic for saying "data" to a data-science question.

What it catches: replies about something else (a generic question about pizza to a question about
queues), empty replies (0), replies in another language than the prompt's (0: no shared words).
What it does not: a reply that copies the prompt's words scores high whatever it says (guarded by
ROUGE-L against the chosen reply and by closer-to-chosen); an on-topic reply that uses words found
neither in the prompt nor in the references (an analogy, a synonym) scores low; a loop of one on-topic
word scores high (guarded by the repetition scores). tests/fixtures/relevance_labelled.jsonl is a
hand-labelled set of on- and off-topic replies in both languages that tests/test_eval_scorers.py checks
it separates.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from prefkit.evaluate.text import content_words


def topic_words(*texts: str | None) -> frozenset[str]:
    return frozenset(w for t in texts if t for w in content_words(t))


def inverse_document_frequency(topics: Sequence[frozenset[str]]) -> dict[str, float]:
    """Smoothed IDF of every word of ``topics``; a word in none of them gets :func:`unseen_idf`."""
    df = Counter(w for topic in topics for w in topic)
    n = len(topics)
    return {w: math.log((1 + n) / (1 + c)) + 1 for w, c in df.items()}


def unseen_idf(n_topics: int) -> float:
    return math.log(1 + n_topics) + 1


def relevance(reply: str, topic: frozenset[str], idf: dict[str, float], n_topics: int) -> float:
    """The IDF-weighted share of the reply's distinct content words that are on ``topic`` (see above)."""
    said = set(content_words(reply))
    if not said:
        return 0.0
    default = unseen_idf(n_topics)
    total = sum(idf.get(w, default) for w in said)
    return sum(idf.get(w, default) for w in said & topic) / total


def relevance_scores(
    replies: Sequence[str],
    prompts: Sequence[str],
    chosen: Sequence[str | None],
    rejected: Sequence[str | None],
) -> list[float]:
    """Relevance of each reply to its own example, with IDF taken over all the examples given."""
    topics = [topic_words(p, c, r) for p, c, r in zip(prompts, chosen, rejected, strict=True)]
    idf = inverse_document_frequency(topics)
    return [relevance(reply, topic, idf, len(topics)) for reply, topic in zip(replies, topics, strict=True)]
