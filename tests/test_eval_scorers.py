"""Each scorer on hand-checked English and Japanese examples, and relevance on a hand-labelled set of
on- and off-topic replies (tests/fixtures/relevance_labelled.jsonl)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefkit.score.guards import flag_samples
from prefkit.score.overlap import closer_to_chosen, corpus_bleu, rouge_l, sentence_bleu
from prefkit.score.relevance import relevance_scores
from prefkit.score.scorers import (
    Sample,
    ScorerError,
    guides_with_question,
    mean_scores,
    resolve_scorers,
    score_samples,
)
from prefkit.score.text import content_words, distinct, repeated_share, words

FIXTURE = Path(__file__).parent / "fixtures" / "relevance_labelled.jsonl"


def test_words_split_japanese_into_morphemes_and_stem_english():
    assert words("学習率を大きくすると、損失はどうなると思いますか？") == [
        "学習", "率", "を", "大きく", "する", "と", "損失", "は", "どう", "なる", "と", "思い", "ます", "か",
    ]  # fmt: skip
    assert words("The stacks, queues!") == ["the", "stack", "queue"]


def test_content_words_keep_the_subject_and_drop_the_talk_around_it():
    assert content_words("What do you think is the difference between a stack and a queue?") == [
        "stack",
        "queue",
    ]
    # nouns, verbs and adjectives by dictionary form; する/思う (light verbs, talk) dropped
    question = "学習率を大きくすると、損失はどうなると思いますか？"
    assert content_words(question) == ["学習", "率", "大きい", "損失"]
    # a loanword's lemma is 'スタック-stack': the Japanese form is kept
    assert content_words("スタックから取り出す") == ["スタック", "取り出す"]
    assert content_words("") == [] and content_words("？？") == []


def test_rouge_l_by_hand():
    # LCS("the cat", "the cat sat") = 2 words: precision 2/2, recall 2/3, F1 = 0.8
    assert rouge_l("the cat", "the cat sat") == pytest.approx(0.8)
    # 学習/率/を/大きく/する vs 学習/率/を/小さく/する: LCS 4 of 5 each way
    assert rouge_l("学習率を大きくする", "学習率を小さくする") == pytest.approx(0.8)
    assert rouge_l("学習率", "学習率") == 1.0
    assert rouge_l("", "the cat") == 0.0
    assert rouge_l("スタック", "stack") == 0.0  # no shared word across languages


def test_bleu_identical_disjoint_and_japanese():
    assert sentence_bleu("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(100)
    assert sentence_bleu("dogs run far away quickly", "the cat sat on the mat") < 1
    diverges = "学習率を大きくすると損失は発散します"
    assert sentence_bleu(diverges, diverges) == pytest.approx(100)
    # Japanese is tokenised, not one opaque word: a half-overlapping sentence scores in between
    partial = sentence_bleu(diverges, "学習率を大きくすると精度が下がります")
    assert 5 < partial < 90
    assert corpus_bleu(["a b c d"], ["a b c d"]) == pytest.approx(100)
    assert corpus_bleu([], []) == 0.0


def test_closer_to_chosen():
    chosen = "What happens to the loss if the learning rate is too large?"
    rejected = "The learning rate scales each update. Too large and training diverges."
    assert closer_to_chosen("What happens to the loss when the rate is large?", chosen, rejected) == 1.0
    assert closer_to_chosen("The rate scales each update, and too large diverges.", chosen, rejected) == 0.0
    assert closer_to_chosen("Pizza tastes nice.", chosen, rejected) == 0.0  # a tie is not closer


def _auc(high: list[float], low: list[float]) -> float:
    return sum((a > b) + 0.5 * (a == b) for a in high for b in low) / (len(high) * len(low))


def test_relevance_and_the_flags_separate_hand_labelled_replies():
    """Relevance tells on-topic replies from off-topic ones; the flags (prefkit.score.guards) catch the
    gamed ones, which relevance alone cannot (docs/evaluation.md gives these figures)."""
    rows = [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]
    assert {r["lang"] for r in rows} == {"en", "ja"} and {r["label"] for r in rows} == {"on", "off", "gamed"}
    samples = [Sample(r["prompt"], r["reply"], r["chosen"], r["rejected"]) for r in rows]
    score_samples(samples, resolve_scorers([], references=True))
    flag_samples(samples)
    by_label = {
        label: [s for r, s in zip(rows, samples, strict=True) if r["label"] == label]
        for label in ("on", "off", "gamed")
    }
    relevance = {label: [s.scores["relevance"] for s in group] for label, group in by_label.items()}
    assert _auc(relevance["on"], relevance["off"]) >= 0.93
    assert sum(relevance["on"]) / len(relevance["on"]) - sum(relevance["off"]) / len(relevance["off"]) >= 0.25
    # precision alone ranks gamed replies above on-topic ones; coverage pulls them back to a coin toss
    precision = {label: [s.scores["relevance_precision"] for s in group] for label, group in by_label.items()}
    assert _auc(precision["on"], precision["gamed"]) < 0.25 < _auc(relevance["on"], relevance["gamed"])
    # the flags catch every gamed reply and nearly every off-topic one, and few on-topic ones
    flagged = {label: sum(bool(s.flags) for s in group) / len(group) for label, group in by_label.items()}
    assert flagged["gamed"] == 1.0 and flagged["off"] >= 0.85 and flagged["on"] <= 0.2, flagged
    # the quickstart's real failures (issue #8) and empty, looping and wrong-language replies score 0
    for r, s in zip(rows, samples, strict=True):
        if r["kind"] in ("real SimPO failure", "empty", "loop", "other language, off topic"):
            assert s.scores["relevance"] == 0.0, r


def test_relevance_ignores_a_word_every_topic_shares():
    prompts = ["What is a p-value?", "What is an outlier?", "What is class imbalance?"]
    refs = ["p-values describe data under the null", "outliers are data far from the rest", "rare data class"]
    on, generic = relevance_scores(
        ["How surprising is the data under the null?", "How would data help you choose a pizza?"],
        prompts[:2], refs[:2],
    )  # fmt: skip
    assert on.precision > 0.5 and generic.precision < 0.2 and on.f1 > 2 * generic.f1


def test_repetition_and_distinct_by_hand():
    tokens = ["a", "b", "a", "b", "a", "b"]
    assert distinct(tokens, 2) == pytest.approx(2 / 5)  # ab ba ab ba ab
    assert repeated_share(tokens, 4) == pytest.approx(1 / 3)  # abab baba abab
    assert repeated_share(["one", "two", "three", "four", "five"], 4) == 0.0
    assert distinct([], 1) == 1.0 and repeated_share([], 4) == 0.0


def test_prompt_copy_by_hand():
    echo = Sample("What does LIFO mean?", "What does LIFO mean?")
    question = Sample("What is a stack?", "If you push three plates onto a stack, which comes off first?")
    partial = Sample("What is a stack?", "What is a stack used for in a compiler?")  # 2 of 7 trigrams
    japanese = Sample("学習率とは何ですか？", "学習率とは何ですか？学習率とは何ですか？")
    score_samples([echo, question, partial, japanese], resolve_scorers(["prompt_copy"], references=False))
    assert echo.scores["prompt_copy"] == 1.0 and question.scores["prompt_copy"] == 0.0
    assert partial.scores["prompt_copy"] == pytest.approx(2 / 7)
    assert japanese.scores["prompt_copy"] > 0.7


def test_socratic_scorer():
    assert guides_with_question("Good start. What happens to the loss if the rate is too large?")
    assert guides_with_question("学習率を大きくすると、損失はどうなると思いますか？")
    assert guides_with_question('What would you call it?")')
    assert not guides_with_question("The learning rate scales each step. Too large and it diverges.")
    assert not guides_with_question("Is it large? It scales each step.")  # a question, then the answer


def _samples() -> list[Sample]:
    return [
        Sample("What is a stack?", "Which item leaves a stack first?", "Which first?", "It is LIFO.", 7),
        Sample("スタックとは？", "スタックです。" * 5, "最初に出るのは？", "後入れ先出しです。", 5),
    ]  # fmt: skip


def test_default_scorers_fill_every_metric():
    samples = _samples()
    score_samples(samples, resolve_scorers(["socratic"]))
    expected = {
        "rouge_l", "bleu", "relevance", "relevance_precision", "relevance_coverage", "closer_to_chosen",
        "length_chars", "length_words", "length_ratio", "length_tokens", "distinct_1", "distinct_2",
        "repeated_4gram_share", "prompt_copy", "socratic",
    }  # fmt: skip
    assert set(samples[0].scores) == expected == set(samples[1].scores)
    assert samples[0].scores["socratic"] == 1.0 and samples[1].scores["socratic"] == 0.0
    assert samples[1].scores["repeated_4gram_share"] > 0.3  # the loop shows
    assert samples[0].scores["length_tokens"] == 7
    means = mean_scores(samples)
    assert means["socratic"] == 0.5


def test_user_scorer_loaded_by_path(tmp_path):
    scorer = tmp_path / "my_scores.py"
    scorer.write_text(
        "def combined_score(sample):\n"
        "    asks = sample.reply.rstrip().endswith(('?', '？'))\n"
        "    return 0.5 * asks + 0.5 * sample.scores['relevance']\n"
        "def several(sample):\n"
        "    return {'chars': len(sample.reply), 'has_stack': 'stack' in sample.reply}\n",
        encoding="utf-8",
    )
    samples = _samples()
    score_samples(samples, resolve_scorers([f"{scorer}:combined_score", f"{scorer}:several"]))
    first = samples[0].scores
    assert first["combined_score"] == pytest.approx(0.5 + 0.5 * first["relevance"])
    assert first["chars"] == len(samples[0].reply) and first["has_stack"] == 1.0


def test_user_scorer_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def text(sample):\n    return 'high'\n", encoding="utf-8")
    with pytest.raises(ScorerError, match="no such file"):
        resolve_scorers([f"{tmp_path}/missing.py:f"])
    with pytest.raises(ScorerError, match="has no function 'nope'"):
        resolve_scorers([f"{bad}:nope"])
    with pytest.raises(ScorerError, match="cannot import module"):
        resolve_scorers(["no_such_module_xyz:f"])
    with pytest.raises(ScorerError, match="unknown scorer 'socratc'"):
        resolve_scorers(["socratc"])
    with pytest.raises(ScorerError, match="expected a number"):
        score_samples(_samples(), resolve_scorers([f"{bad}:text"]))


def test_the_example_combined_score_fails_an_off_topic_question():
    example = Path(__file__).parent.parent / "examples" / "scorers" / "socratic.py"
    prompt, chosen, rejected = "What is a stack?", "Which item leaves a stack first?", "A stack is LIFO."
    on = Sample(prompt, "If you push three items onto a stack, which item leaves first?", chosen, rejected)
    off = Sample(prompt, "What would you do if you were given a pizza?", chosen, rejected)
    score_samples([on, off], resolve_scorers([f"{example}:combined_score"]))
    assert on.scores["combined_score"] > 0.6 and off.scores["combined_score"] == 0.5
