"""Words of a reply, for the text scorers: one tokenisation for English and Japanese.

* :func:`words` -- every word, for ROUGE and BLEU. Japanese is split into morphemes by MeCab (fugashi
  with the unidic-lite dictionary: Japanese has no spaces, and rouge-score's own tokenizer drops every
  non-ASCII character, which would score any two Japanese texts 0); other text is lowercased and split
  into ASCII words and stemmed as rouge-score does (Porter). Punctuation is dropped in both.
* :func:`content_words` -- the words that carry a subject, for relevance: nouns, verbs and adjectives by
  their dictionary form for Japanese, the stemmed words outside a stop list for English. The stop lists
  also hold the words every tutoring reply uses whatever its subject ("think", "example", 思う, 考える),
  so they count neither for nor against a topic.

A text is Japanese when it holds any kana or CJK ideograph (an English word inside Japanese text is
still a word of it); a mixed reply is tokenised as Japanese, whose dictionary handles ASCII words too.
"""

from __future__ import annotations

import functools
import re
from typing import Any

_JAPANESE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff66-\uff9f]")
_ASCII_WORD = re.compile(r"[a-z0-9]+")

# Function words and the vocabulary of talking about a question rather than its subject.
ENGLISH_STOPWORDS = frozenset(  # apostrophes are dropped before words are looked up
    """
    a about above after again against all also am an and answer answers any are arent as ask asked
    asking at be because been before being below between both but by can cannot cant case consider
    could couldnt did didnt difference different do does doesnt doing dont down during each either
    else even ever every example examples explain explanation few find for from further get gets
    getting good got great had hadnt happen happens has hasnt have havent having he her here hers
    herself him himself his how i idea if imagine in into is isnt it its itself just kind know let
    lets like likely look make makes may me mean means might more most much must my myself need no
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


def is_japanese(text: str) -> bool:
    return bool(_JAPANESE.search(text))


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
    return _ASCII_WORD.findall(text.lower().replace("'", ""))


def _morphemes(text: str) -> list[tuple[str, str, str, str]]:
    """(surface, part of speech, sub-class, dictionary form) per morpheme, punctuation and space dropped."""
    out = []
    for word in _tagger()(text):
        f = word.feature
        if f.pos1 in ("補助記号", "記号", "空白"):
            continue
        lemma = (f.lemma or word.surface).split("-")[0]  # loanwords: 'スタック-stack' -> 'スタック'
        out.append((word.surface.lower(), f.pos1, f.pos2, lemma.lower()))
    return out


def words(text: str) -> list[str]:
    """Every word of ``text`` (see module docstring): the tokens ROUGE and BLEU count."""
    if is_japanese(text):
        return [surface for surface, *_ in _morphemes(text)]
    return [_stem(w) for w in _english_words(text)]


def content_words(text: str) -> list[str]:
    """The subject-bearing words of ``text``, in order, repeats kept (see module docstring)."""
    if is_japanese(text):
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


class RougeTokenizer:
    """The ``tokenize`` interface rouge-score asks of a custom tokenizer."""

    def tokenize(self, text: str) -> list[str]:
        return words(text)
