"""Guards: what a set of replies must not be, whatever its scores.

Mean scores can be gamed: one-word replies, the same reply to every prompt, a fixed frame with the
prompt's subject swapped in, loops. Each of these is easy to see in a single reply, or across replies,
and hard to see in a mean. So each reply gets *flags* -- a named failure, decided from the reply alone or
from the replies to the other prompts -- and a *guard* is the share of flagged replies in each language,
with a limit. A guard fails when that share is over its limit in any language; an evaluation lists the
guards it fails (``failed_guards`` in eval.json), the sweep never names a run that fails one best, and
the quickstart's verdict for a language is read from them.

The flags (:data:`FLAGS`), each the answer to "would a reader call this reply broken?":

* ``empty`` -- no word at all.
* ``short`` -- fewer than a quarter of the words of the chosen reply. A reply cut off at the token limit
  is not short by choice, so it is exempt -- when it has 8 words or more (a reply said to be cut off
  after two words was not cut off by any real limit).
* ``looping`` -- a quarter or more of its word 4-grams repeat an earlier one, or a third or more of its
  word bigrams (when it has 8 bigrams or more), or a stretch of 1 to 40 characters holding a letter or
  a non-ASCII character is said four or more times in a row, 8 characters or more in all
  (「？？？？？？？？」, "no no no no"; not "10000" or "----"). The held-out chosen and rejected replies of
  the bundled tutor data repeat at most a fifth of their bigrams.
* ``prompt_copy`` -- half or more of its word n-grams (trigrams; shorter replies, their whole length)
  occur in the prompt, or four in five of its words are the prompt's (the prompt's words reordered):
  the question said back. The bundled tutor data's replies take at most 43% of their words from their
  prompt.
* ``wrong_language`` -- written in another language than its prompt (:func:`text.language`, which tells
  Japanese from everything else: a German reply to an English prompt is not flagged).
* ``off_topic`` -- no content word of the reply is in the topic (relevance 0): about something else, or
  about nothing (「どうなるでしょうか？」 has no content word at all).
* ``rejected_like`` -- nearer the rejected reply than the chosen one, and near it (ROUGE-L >= 0.5): the
  behaviour preference training should remove.
* ``duplicate`` -- once the words of its own prompt are removed, the same as, or nearly the same as
  (ROUGE-L >= 0.8), what is left of the reply to another prompt. This is collapse: 「どうなるでしょうか？」
  to every prompt, or 「〈subject〉は、どうなるでしょうか？」 with the subject swapped in, which no
  per-reply score sees. Two prompts may deserve the same reply: a pair is exempt when the two chosen
  replies are themselves such copies, or when each of the two replies is (nearly all) found in one of
  the two prompts' chosen replies, and is at least half of it -- the data gives that reply to both.

Beside the flags, ``distinct_2_across`` is a set-level diversity figure per language: the distinct word
bigrams of all replies over all their bigrams (the chosen replies' own figure is reported beside it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prefkit.errors import PrefkitError
from prefkit.score.overlap import rouge_l
from prefkit.score.text import LANGUAGES, copied_share, language, ngrams, repeated_share, words

if TYPE_CHECKING:
    from prefkit.score.scorers import Sample

# flag -> (the largest share of a language's replies that may carry it, what a flagged reply is)
FLAGS: dict[str, tuple[float, str]] = {
    "empty": (0.05, "no words"),
    "short": (0.25, "under a quarter of the chosen reply's length"),
    "looping": (0.05, "repeats itself"),
    "prompt_copy": (0.2, "says the prompt back"),
    "wrong_language": (0.1, "not in the prompt's language"),
    "off_topic": (0.5, "no word of the topic"),
    "rejected_like": (0.25, "reproduces the rejected reply"),
    "duplicate": (0.2, "the same as the reply to another prompt, the prompt's words aside"),
}

SHORT_RATIO = 0.25
TRUNCATED_MIN_WORDS = 8
LOOP_4GRAM_SHARE = 0.25
LOOP_BIGRAM_SHARE = 0.3
LOOP_MIN_BIGRAMS = 8
LOOP_MIN_RUN = 8  # characters
COPY_SHARE = 0.5
COPY_WORD_SHARE = 0.8
REJECTED_ROUGE = 0.5
DUPLICATE_ROUGE = 0.8
CONTAINED = 0.8  # the share of a reply's words that lie in a common subsequence with a chosen reply
DUPLICATE_MAX_WORDS = 256  # what the duplicate check compares of a reply: its beginning
_RUN = re.compile(r"(\S.{0,39}?)\1{3,}", re.DOTALL)  # a stretch said 4+ times in a row
_LETTER_OR_WIDE = re.compile(r"[^\W\d_]|[^\x00-\x7f]")


def loops(reply: str, tokens: Sequence[str] | None = None) -> bool:
    tokens = words(reply) if tokens is None else tokens
    return (
        repeated_share(tokens, 4) >= LOOP_4GRAM_SHARE
        or (len(tokens) > LOOP_MIN_BIGRAMS and repeated_share(tokens, 2) >= LOOP_BIGRAM_SHARE)
        or any(
            len(run.group()) >= LOOP_MIN_RUN and _LETTER_OR_WIDE.search(run.group(1))
            for run in _RUN.finditer(reply)
        )
    )


def copies_prompt(reply: Sequence[str], prompt: Sequence[str]) -> bool:
    """The reply says the prompt back: in order (trigrams), or its words reordered."""
    if copied_share(reply, prompt) >= COPY_SHARE:
        return True
    own = set(prompt)
    return bool(reply) and sum(w in own for w in reply) / len(reply) >= COPY_WORD_SHARE


def _residual(reply: Sequence[str], prompt: Sequence[str]) -> list[str]:
    """The reply's words that are not words of its prompt, in order (its beginning, for long replies)."""
    own = set(prompt)
    return [w for w in reply if w not in own][:DUPLICATE_MAX_WORDS]


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    """The length of the longest common subsequence of two word lists."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for k, y in enumerate(b):
            current.append(previous[k] + 1 if x == y else max(previous[k + 1], current[k]))
        previous = current
    return previous[-1]


def _near(a: Sequence[str], b: Sequence[str]) -> bool:
    """ROUGE-L F1 of the two word lists >= :data:`DUPLICATE_ROUGE` (two empty lists are not near: a reply
    made of its prompt's words alone is the prompt copy flag's business)."""
    if not a or not b:
        return False
    if a == b:
        return True
    shorter, longer = sorted((len(a), len(b)))
    if shorter < DUPLICATE_ROUGE / (2 - DUPLICATE_ROUGE) * longer:  # F1 >= t needs len ratio >= t/(2-t)
        return False
    needed = DUPLICATE_ROUGE * (len(a) + len(b)) / 2
    if len(set(a) & set(b)) < needed - (len(a) - len(set(a))):  # too few shared words for the LCS
        return False
    return _lcs(a, b) >= needed


def _within(reply: Sequence[str], reference: Sequence[str] | None) -> bool:
    """Nearly all the reply's words lie, in order, in the reference, and they are at least half of it (a
    short frame found inside many references, 「どうなるでしょうか」, is not what any of them asks for)."""
    return (
        bool(reply)
        and reference is not None
        and len(reply) >= len(reference) / 2
        and _lcs(reply, reference) >= CONTAINED * len(reply)
    )


def duplicates(samples: Sequence[Sample]) -> set[int]:
    """Indices of the replies that are (near-)duplicates of the reply to another prompt of the same
    language, the prompts' own words removed (see module docstring)."""
    prompts = [words(s.prompt) for s in samples]
    residual = [_residual(words(s.reply), p) for s, p in zip(samples, prompts, strict=True)]
    references = [
        _residual(words(s.chosen), p) if s.chosen else None for s, p in zip(samples, prompts, strict=True)
    ]
    langs = [language(s.prompt) for s in samples]
    found: set[int] = set()
    for i in range(len(samples)):
        for j in range(i + 1, len(samples)):
            if langs[i] != langs[j] or samples[i].prompt == samples[j].prompt:
                continue
            if not _near(residual[i], residual[j]):
                continue
            refs = (references[i], references[j])
            if refs[0] is not None and refs[1] is not None and _near(refs[0], refs[1]):
                continue  # the two prompts deserve the same reply
            if all(any(_within(residual[k], ref) for ref in refs) for k in (i, j)):
                continue  # both replies come from the two prompts' chosen replies
            found.update((i, j))
    return found


def reply_flags(sample: Sample, duplicate: bool) -> list[str]:
    """The :data:`FLAGS` this reply carries. Reads the scores already computed for it (relevance,
    ROUGE-L against the chosen and rejected replies) where they are there."""
    said = words(sample.reply)
    if not said:
        return ["empty"]
    flags = []
    cut_off = sample.truncated and len(said) >= TRUNCATED_MIN_WORDS
    if sample.chosen and not cut_off:
        chosen_words = len(words(sample.chosen))
        if chosen_words >= 4 and len(said) < SHORT_RATIO * chosen_words:
            flags.append("short")
    if loops(sample.reply, said):
        flags.append("looping")
    if copies_prompt(said, words(sample.prompt)):
        flags.append("prompt_copy")
    if language(sample.reply) != language(sample.prompt):
        flags.append("wrong_language")
    if sample.scores.get("relevance", 1.0) == 0.0:
        flags.append("off_topic")
    if sample.chosen and sample.rejected:
        near_rejected = rouge_l(sample.reply, sample.rejected)
        if near_rejected >= REJECTED_ROUGE and near_rejected > rouge_l(sample.reply, sample.chosen):
            flags.append("rejected_like")
    if duplicate:
        flags.append("duplicate")
    return flags


def flag_samples(samples: Sequence[Sample]) -> None:
    """Set every sample's ``flags``."""
    dupes = duplicates(samples)
    for i, sample in enumerate(samples):
        sample.flags = reply_flags(sample, i in dupes)


def distinct_across(texts: Sequence[str], n: int = 2) -> float:
    """Distinct word n-grams of all ``texts`` over all their n-grams (1.0 with none): low when the replies
    say the same things to different prompts."""
    grams = [g for t in texts for g in ngrams(words(t), n)]
    return len(set(grams)) / len(grams) if grams else 1.0


@dataclass(frozen=True)
class GuardResult:
    guard: str
    language: str
    share: float  # of this language's replies that carry the flag
    limit: float
    replies: int

    @property
    def failed(self) -> bool:
        return self.share > self.limit

    def describe(self) -> str:
        return (
            f"{self.guard} ({self.language}): {self.share:.2f} of {self.replies} replies "
            f"{FLAGS[self.guard][1]}, over the limit {self.limit:g}"
        )


def group_by_language(samples: Sequence[Sample]) -> dict[str, list[Sample]]:
    """The samples grouped by their prompt's language, in :data:`LANGUAGES` order, empty groups left out."""
    groups: dict[str, list[Sample]] = {lang: [] for lang in LANGUAGES}
    for s in samples:
        groups[language(s.prompt)].append(s)
    return {lang: group for lang, group in groups.items() if group}


def parse_guard_limits(texts: Sequence[str]) -> dict[str, float]:
    """``FLAG=SHARE`` texts (``--guard-limit short=0.5``) as limits, each flag one of :data:`FLAGS`."""
    limits = {}
    for text in texts:
        name, sep, value = text.partition("=")
        name = name.strip()
        if not sep or name not in FLAGS:
            raise PrefkitError(
                f"--guard-limit {text!r}: expected FLAG=SHARE with FLAG one of {', '.join(FLAGS)}"
            )
        try:
            share = float(value)
        except ValueError:
            share = -1.0
        if not 0 <= share <= 1:
            raise PrefkitError(f"--guard-limit {text!r}: the share must be a number from 0 to 1")
        limits[name] = share
    return limits


def check_guards(samples: Sequence[Sample], limits: Mapping[str, float] | None = None) -> list[GuardResult]:
    """Every guard in every language of the (flagged) samples; ``limits`` overrides :data:`FLAGS`'s."""
    limits = {**{name: limit for name, (limit, _) in FLAGS.items()}, **(limits or {})}
    results = []
    for lang, group in group_by_language(samples).items():
        for name in FLAGS:
            share = sum(name in s.flags for s in group) / len(group)
            results.append(GuardResult(name, lang, share, limits[name], len(group)))
    return results


def failed_guards(results: Sequence[GuardResult]) -> list[str]:
    """``guard (language)`` for every guard that fails, in :data:`FLAGS` order."""
    return [f"{r.guard} ({r.language})" for r in results if r.failed]


@dataclass(frozen=True)
class BaselineGuard:
    """A score on which the model may not be worse than its baseline (the model it started from) by more
    than ``tolerance``, in any language."""

    metric: str
    tolerance: float
    higher_is_better: bool
    catches: str

    def failure(self, language: str, value: float | None, base: float | None) -> str | None:
        if value is None or base is None:
            return None
        where = f"{self.metric} ({language})"
        if self.higher_is_better and value < base - self.tolerance:
            return f"{where}: {value:.3f} < baseline {base:.3f} - {self.tolerance:g} ({self.catches})"
        if not self.higher_is_better and value > base + self.tolerance:
            return f"{where}: {value:.3f} > baseline {base:.3f} + {self.tolerance:g} ({self.catches})"
        return None


BASELINE_GUARDS = (
    BaselineGuard("relevance", 0.05, True, "replies off the prompt's subject"),
    BaselineGuard("prompt_copy", 0.10, False, "replies say the prompt back"),
    BaselineGuard("repeated_4gram_share", 0.10, False, "replies loop"),
)


def baseline_failures(
    model: Mapping[str, Mapping[str, float]],
    baseline: Mapping[str, Mapping[str, float]],
    guards: Sequence[BaselineGuard] = BASELINE_GUARDS,
) -> list[str]:
    """What the model does worse than its baseline, per language (``generation_by_language`` of each)."""
    failures = []
    for lang, figures in model.items():
        base = baseline.get(lang, {})
        for guard in guards:
            failure = guard.failure(lang, figures.get(guard.metric), base.get(guard.metric))
            if failure:
                failures.append(failure)
    return failures
