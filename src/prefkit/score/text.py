"""Words of a reply, for the text scorers: one tokenisation for English and Japanese.

Every text is NFKC-normalised first, so full-width letters and digits (``ＡＩ``, ``１２``) are the ASCII
ones and half-width katakana the full-width ones: the same word is the same word however it was typed.

* :func:`words` -- every word, for ROUGE-L, length, repetition and copying. Japanese is split into
  morphemes by MeCab (fugashi with the unidic-lite dictionary: Japanese has no spaces, and rouge-score's
  own tokenizer drops every non-ASCII character, which would score any two Japanese texts 0); other text
  is lowercased, split into words of letters and digits (accented letters included: ``café`` is one
  word) and stemmed as rouge-score does (Porter). Punctuation is dropped in both. BLEU does not use these
  words: it is sacreBLEU's own (:mod:`prefkit.score.overlap`).
* :func:`content_words` -- the words that carry a subject, for relevance: nouns, verbs and adjectives by
  their dictionary form for Japanese, the stemmed words outside a stop list for English. The stop lists
  also hold the words every tutoring reply uses whatever its subject ("think", "example", 思う, 考える),
  so they count neither for nor against a topic.

A text is tokenised as Japanese when it holds any kana or CJK ideograph (an English word inside
Japanese text is still a word of it; MeCab's dictionary handles ASCII words too). Which *language* a text
is written in (:func:`language`) is a different question, asked of the whole text: ``ja`` when its
Japanese characters outweigh its Latin letters (a Japanese character carries about a syllable, so one
counts as four letters), ``en`` otherwise -- an English reply that quotes one Japanese word is English.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

_JAPANESE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff66-\uff9f]")
_LETTER = re.compile(r"[^\W\d_]")  # a letter of any script
_WORD = re.compile(r"[^\W_]+")  # letters and digits of any script (after NFKC)
_APOSTROPHES = str.maketrans("", "", "'\u2019")  # don't / don’t -> dont
LANGUAGES = ("en", "ja")

# Function words and the vocabulary of talking about a question rather than its subject.
ENGLISH_STOPWORDS = frozenset(  # apostrophes are dropped before words are looked up
    """
    a about above after again against all also am an and answer answers any are arent as ask asked
    asking at be because been before being below between both but by can cannot cant case consider
    could couldnt did didnt difference different do does doesnt doing dont down during each either
    else even ever every example examples explain explanation few find for from further get gets
    getting good got great had hadnt happen happens has hasnt have havent having he her here hers
    herself him himself his how i idea if imagine in into is isnt it its itself just kind know let
    lets like likely look make makes may me might more most much must my myself need no
    nor not now of off on once one only or other our ours ourselves out over own per question
    questions quite rather really right same say see she should so some something start step steps
    such sure tell than that thats the their theirs them themselves then there these they thing
    things think this those thought through to too try under understand until up upon us use used
    using very want was wasnt way ways we well were werent what when where whether which while who
    whom whose why will with within without wont work works would wouldnt yes yet you your yours
    yourself yourselves
    """.split()  # noqa: SIM905
)
JAPANESE_STOPWORDS = frozenset(  # dictionary forms (UniDic lemmas)
    """
    あれ ここ これ そこ それ どれ 上 下 下さる 中 事 今 仕舞う 他 何 例 例えば 出来る 分かる 前
    呉れる 問題 場合 多い 少ない 居る 彼 彼女 後 思う 意味 成る 所 方 時 有る 来る 様 次 為 為る
    無い 物 理由 皆さん 知る 私 筈 答え 置く 考える 自分 良い 行く 見る 言う 訳 説明 貰う 貴方
    質問 違い 遣る
    """.split()  # noqa: SIM905
)

_KEEP_JAPANESE_POS = {"名詞", "動詞", "形容詞"}


def normalise(text: str) -> str:
    """NFKC: compatibility forms folded into the plain ones (``ＡＩ`` -> ``AI``, ``ｶﾀｶﾅ`` -> ``カタカナ``)."""
    return unicodedata.normalize("NFKC", text)


def language(text: str) -> str:
    """``ja`` or ``en``: the language a text is written in, by its characters (see module docstring)."""
    text = normalise(text)
    japanese = len(_JAPANESE.findall(text))
    other_letters = len(_LETTER.findall(text)) - japanese
    return "ja" if japanese and 4 * japanese >= other_letters else "en"


@functools.cache
def _tagger() -> Any:
    try:
        import fugashi
    except ImportError as err:  # a runtime dependency; only a broken install gets here
        raise ImportError(
            "Japanese scoring needs fugashi and unidic-lite: pip install fugashi unidic-lite"
        ) from err
    return fugashi.Tagger()


@functools.cache
def _stemmer() -> Any:
    from nltk.stem import porter

    return porter.PorterStemmer()


@functools.lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    return _stemmer().stem(word) if len(word) > 3 else word


@functools.cache
def _stopword_stems() -> frozenset[str]:
    return frozenset(_stem(w) for w in ENGLISH_STOPWORDS) | ENGLISH_STOPWORDS


def _english_words(text: str) -> list[str]:
    return _WORD.findall(text.lower().translate(_APOSTROPHES))


def _morphemes(text: str) -> list[tuple[str, str, str, str]]:
    """(surface, part of speech, sub-class, dictionary form) per morpheme, punctuation and space dropped."""
    out = []
    for word in _tagger()(text):  # text is normalised by the caller
        f = word.feature
        if f.pos1 in ("補助記号", "記号", "空白"):
            continue
        lemma = (f.lemma or word.surface).split("-")[0]  # loanwords: 'スタック-stack' -> 'スタック'
        out.append((word.surface.lower(), f.pos1, f.pos2, lemma.lower()))
    return out


def words(text: str) -> list[str]:
    """Every word of ``text`` (see module docstring): the tokens ROUGE-L, length, repetition and the
    guards count."""
    return list(_words(text))


@functools.lru_cache(maxsize=4096)
def _words(text: str) -> tuple[str, ...]:
    # Each reply, prompt and reference is read by several scorers and by the guards: tokenised once.
    text = normalise(text)
    if _JAPANESE.search(text):
        return tuple(surface for surface, *_ in _morphemes(text))
    return tuple(_stem(w) for w in _english_words(text))


def content_words(text: str) -> list[str]:
    """The subject-bearing words of ``text``, in order, repeats kept (see module docstring)."""
    text = normalise(text)
    if _JAPANESE.search(text):
        return [
            lemma
            for _, pos, sub, lemma in _morphemes(text)
            if pos in _KEEP_JAPANESE_POS
            and sub not in ("数詞", "非自立可能")
            and lemma not in JAPANESE_STOPWORDS
            and not lemma.isdigit()
        ]
    stop = _stopword_stems()
    stems = (_stem(w) for w in _english_words(text) if w not in stop and not w.isdigit() and len(w) > 1)
    return [s for s in stems if s not in stop]


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct(tokens: Sequence[str], n: int) -> float:
    """Distinct n-grams over all n-grams (1.0 for a text too short to have any)."""
    grams = ngrams(tokens, n)
    return len(set(grams)) / len(grams) if grams else 1.0


def repeated_share(tokens: Sequence[str], n: int = 4) -> float:
    """The share of n-grams that repeat an earlier n-gram of the same text: 0 for fresh text, near 1 for
    a loop."""
    grams = ngrams(tokens, n)
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def copied_share(reply: Sequence[str], source: Sequence[str], n: int = 3) -> float:
    """The share of the reply's word n-grams that occur in ``source`` (a reply shorter than ``n`` words is
    one n-gram of its own length): 1 for a reply that repeats the source, 0 for one in its own words."""
    if not reply:
        return 0.0
    n = min(n, len(reply))
    grams = ngrams(reply, n)
    seen = set(ngrams(source, n))
    return sum(g in seen for g in grams) / len(grams)


class RougeTokenizer:
    """The ``tokenize`` interface rouge-score asks of a custom tokenizer."""

    def tokenize(self, text: str) -> list[str]:
        return words(text)
