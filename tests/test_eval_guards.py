"""The flags and guards of prefkit.score.guards on hand-made replies, and the text normalisation and
BLEU they rest on."""

from __future__ import annotations

import pytest
import sacrebleu

from prefkit.errors import PrefkitError
from prefkit.score.guards import (
    FLAGS,
    baseline_failures,
    check_guards,
    distinct_across,
    duplicates,
    failed_guards,
    flag_samples,
    loops,
    parse_guard_limits,
)
from prefkit.score.overlap import corpus_bleu, sentence_bleu
from prefkit.score.scorers import Sample, resolve_scorers, score_samples
from prefkit.score.text import content_words, copied_share, language, words

STACK = ("What is a stack?", "If you pile plates, which plate do you take off first?", "A stack is LIFO.")
QUEUE = ("What is a queue?", "If people line up at a shop, who is served first?", "A queue is FIFO.")
RATE = (
    "学習率とは何ですか？",
    "霧の中を大股で下ると、谷底の近くでどうなるでしょうか？",
    "更新の大きさです。",
)


def _flagged(*samples: Sample) -> list[Sample]:
    score_samples(samples, resolve_scorers([]))
    flag_samples(samples)
    return list(samples)


def test_nfkc_and_accented_words():
    assert words("ＡＩとは？") == words("AIとは？") and content_words("ＬＩＦＯ") == ["lifo"]
    assert words("The café’s menu") == ["the", "café", "menu"]  # not 'caf'
    assert words("don't") == words("don’t") == ["dont"]


def test_language_is_what_the_text_is_mostly_written_in():
    assert language("What does 広告 mean in Japanese?") == "en"
    assert language("AIとは何ですか？") == "ja" and language("pytestでのテストの書き方は？") == "ja"
    assert language("") == "en"


def test_bleu_is_sacrebleu_with_the_languages_own_tokenizer():
    hyps = ["The cat sat on the mat.", "A dog, barking loudly!"]
    refs = ["The cat sat on a mat.", "The dog barked loudly."]
    assert corpus_bleu(hyps, refs) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    ja_h, ja_r = ["学習率を大きくすると損失は発散します"], ["学習率を大きくすると精度が下がります"]
    expected = sacrebleu.corpus_bleu(ja_h, [ja_r], tokenize="ja-mecab").score
    assert corpus_bleu(ja_h, ja_r) == pytest.approx(expected)
    assert sentence_bleu("The cat sat.", "The cat sat on the mat.") == pytest.approx(
        sacrebleu.sentence_bleu("The cat sat.", ["The cat sat on the mat."]).score
    )
    # cased and unstemmed, as sacreBLEU is: "Stacks" is not "stack"
    assert sentence_bleu("Stacks", "stack") < sentence_bleu("stack", "stack")


def test_one_word_and_empty_replies():
    one, empty, good = _flagged(
        Sample(STACK[0], "Stack?", STACK[1], STACK[2]),
        Sample(QUEUE[0], "", QUEUE[1], QUEUE[2]),
        Sample(QUEUE[0], QUEUE[1], QUEUE[1], QUEUE[2]),
    )
    assert "short" in one.flags and "prompt_copy" in one.flags  # its one word is the prompt's
    assert empty.flags == ["empty"] and good.flags == []


def test_a_reply_cut_off_at_the_token_limit_is_not_short_by_choice():
    chosen = " ".join(f"word{i}" for i in range(60))
    reply = "One two three four five six seven eight nine."
    cut = Sample("Explain it at length.", reply, chosen, truncated=True)
    ended = Sample("Explain it at length.", reply, chosen)
    # two words said to be cut off were cut off by no real limit: a file cannot claim it
    claimed = Sample("Explain it at length.", "Seen actually?", chosen, truncated=True)
    _flagged(cut, ended, claimed)
    assert "short" not in cut.flags and "short" in ended.flags and "short" in claimed.flags


def test_loops_of_words_and_of_characters():
    assert loops("If you buy something now, you'll get it later. " * 5)
    assert loops("何がどうなるでしょうか？？？？？？？？")  # punctuation is no word: seen as characters
    assert loops("はいはいはいはいはい")
    assert loops("ブランドセーフティは、ブランドセーフティの守り方は、ブランドセーフティの守")  # bigrams
    assert not loops("If you pile plates, which plate do you take off first?")
    assert not loops("Wait... what happens next?")  # three dots are no loop
    for ordinary in (
        "What is 10000 times 0xFFFF?",
        "Compare 1111 with 'aaaa'.",
        "Use ---- or ....",
        "| --- | --- |",
    ):
        assert not loops(ordinary), ordinary


def test_the_same_frame_to_every_prompt_is_a_duplicate_once_the_prompts_words_are_removed():
    frames = _flagged(
        Sample(
            "ブランドセーフティとは何ですか？",
            "ブランドセーフティは、どうなるでしょうか？",
            "広告の横の記事は？",
        ),
        Sample("外れ値とは何ですか？", "外れ値は、どうなるでしょうか？", "身長が1700cmなら？"),
        Sample("学習率とは何ですか？", "どうなるでしょうか？", "霧の中を大股で下ると？"),
        Sample(
            "不正クリックはどう見分けますか？", "ボットを疑うなら、データのどこを見ますか？", "ボットなら？"
        ),
    )
    assert [("duplicate" in s.flags) for s in frames] == [True, True, True, False]


def test_the_prompts_words_reordered_are_a_prompt_copy():
    scrambled, echo, own = _flagged(
        Sample("What is a unit test?", "test unit a is What test is a unit What?", "Which input first?"),
        Sample("学習率とは何ですか？", "何ですか学習率とは？", "霧の中を大股で下ると？"),
        Sample("What is a unit test?", "Which input would you check first, and why?", "Which input first?"),
    )
    assert "prompt_copy" in scrambled.flags and "prompt_copy" in echo.flags and own.flags == []


def test_replies_taken_from_the_chosen_replies_are_not_duplicates():
    """Two prompts whose chosen replies share their guiding question: that question, said to both, is
    what the data asks for (a preamble aside)."""
    question = "If a billionaire joins a room of ten teachers, which changes more, the mean or the median?"
    a, b = _flagged(
        Sample("How do outliers affect the mean?", question, question),
        Sample("Why is the average salary so high?", question, "Think about who earns the most. " + question),
    )
    assert "duplicate" not in a.flags + b.flags


def test_replies_to_prompts_that_deserve_the_same_reply_are_not_duplicates():
    same = "If a bot fakes the clicks, where in the data would you look?"
    a, b = _flagged(
        Sample("How do I spot click fraud?", same, same),
        Sample("What is ad fraud?", same, same),
    )
    assert a.flags == b.flags == []
    assert duplicates(
        [Sample("How do I spot click fraud?", same, "x y z"), Sample("What is ad fraud?", same, "q r s")]
    ) == {0, 1}


def test_wrong_language_off_topic_and_rejected_like():
    wrong, off, dump = _flagged(
        Sample(RATE[0], "What would you do if you were given a pizza?", RATE[1], RATE[2]),
        Sample(STACK[0], "What is your favourite colour?", STACK[1], STACK[2]),
        Sample(QUEUE[0], "A queue is FIFO, as you know.", QUEUE[1], QUEUE[2]),
    )
    assert "wrong_language" in wrong.flags and "off_topic" in off.flags and "rejected_like" in dump.flags


def test_guards_are_shares_per_language_with_limits():
    question = "Which part of topic {} would you test first, and why?"
    samples = _flagged(
        *[Sample(f"What is thing {i}?", "", "Which part of it would you test first?") for i in range(2)],
        *[Sample(f"Topic {i}, what is it?", question.format(i), question.format(i)) for i in range(8)],
        Sample(RATE[0], RATE[1], RATE[1], RATE[2]),
    )
    results = {(g.guard, g.language): g for g in check_guards(samples)}
    assert results[("empty", "en")].share == pytest.approx(0.2) and results[("empty", "en")].failed
    assert not results[("empty", "ja")].failed and results[("empty", "ja")].replies == 1
    assert failed_guards(check_guards(samples))[0] == "empty (en)"
    assert not any(g.failed for g in check_guards(samples, {"empty": 0.25}) if g.guard == "empty")
    assert set(FLAGS) == {g.guard for g in check_guards(samples)}


def test_guard_limits_from_the_command_line():
    assert parse_guard_limits(["short=0.5", "duplicate=0"]) == {"short": 0.5, "duplicate": 0.0}
    for bad in ("short", "shrot=0.5", "short=2", "short=x"):
        with pytest.raises(PrefkitError):
            parse_guard_limits([bad])


def test_baseline_failures_per_language():
    model = {"en": {"relevance": 0.5, "prompt_copy": 0.1}, "ja": {"relevance": 0.1, "prompt_copy": 0.4}}
    base = {"en": {"relevance": 0.4, "prompt_copy": 0.1}, "ja": {"relevance": 0.3, "prompt_copy": 0.1}}
    failures = baseline_failures(model, base)
    assert len(failures) == 2 and all(f.startswith(("relevance (ja)", "prompt_copy (ja)")) for f in failures)


def test_distinct_across_replies_and_copied_share():
    assert distinct_across(["a b c", "d e f"]) == 1.0
    assert distinct_across(["a b c", "a b c"]) == 0.5
    assert copied_share(["lifo"], ["what", "does", "lifo", "mean"]) == 1.0  # a one-word reply: unigrams
    assert copied_share([], ["x"]) == 0.0
