"""The gaming suite: replies that game the scores -- one word, the same reply to every prompt, one frame
with the subject swapped in, the rejected answer dumps, the prompt said back, loops, empty replies,
replies in the other language -- fed through `prefkit eval --replies` (no model: the replies are given)
and through the sweep's ranking. Each must fail at least one guard, and none may rank best; the held-out
chosen replies themselves pass every guard and rank best."""

from __future__ import annotations

import json

import fugashi
import pytest
from typer.testing import CliRunner

from prefkit.cli import app
from prefkit.data.examples import PreferenceExample
from prefkit.data.formats import parse_file
from prefkit.score.text import language
from prefkit.sweep.ranking import Row, best, measured, rank_rows

DATA = "builtin:tutor_test"


def _pairs() -> list[PreferenceExample]:
    return [e for e in parse_file(DATA, stage="dpo").examples if isinstance(e, PreferenceExample)]


_TAGGER = fugashi.Tagger()


def subject(prompt: str) -> str:
    """The prompt's subject as a user would write it: its first run of nouns (Japanese), else its longest
    word (English)."""
    if language(prompt) == "ja":
        nouns: list[str] = []
        for word in _TAGGER(prompt):
            if word.feature.pos1 == "名詞":
                nouns.append(word.surface)
            elif nouns:
                break
        return "".join(nouns) or prompt[:4]
    return max(prompt.rstrip("?").split(), key=len)


def _other_language(pairs: list[PreferenceExample]) -> list[str]:
    by_lang = {
        lang: [p.chosen for p in pairs if language(p.prompt[-1].content) == lang] for lang in ("en", "ja")
    }
    replies = []
    for i, p in enumerate(pairs):
        other = by_lang["ja" if language(p.prompt[-1].content) == "en" else "en"]
        replies.append(other[i % len(other)])
    return replies


def gaming_cases(pairs: list[PreferenceExample]) -> dict[str, list[str]]:
    """Replies to every pair, one list per way of gaming the scores (plus the honest control)."""

    def per_language(en, ja):
        return [
            en(p.prompt[-1].content) if language(p.prompt[-1].content) == "en" else ja(p.prompt[-1].content)
            for p in pairs
        ]

    return {
        "chosen": [p.chosen for p in pairs],  # the control: the held-out references themselves
        "one_word": per_language(lambda q: f"{subject(q)}?", lambda q: f"{subject(q)}？"),
        "same_reply": per_language(lambda q: "What do you think about it?", lambda q: "どう思いますか？"),
        "frame": per_language(
            lambda q: f"What would happen to {subject(q)} if you changed it?",
            lambda q: f"{subject(q)}は、どうなるでしょうか？",
        ),
        "rejected": [p.rejected for p in pairs],
        "prompt_copy": [p.prompt[-1].content for p in pairs],
        "loop": [" ".join([p.chosen] * 4) for p in pairs],
        "empty": ["" for _ in pairs],
        "other_language": _other_language(pairs),
    }  # fmt: skip


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> dict[str, dict]:
    """Each case scored by `prefkit eval --replies` as a user would run it: its eval.json."""
    tmp = tmp_path_factory.mktemp("gaming")
    pairs = _pairs()
    reports = {}
    for name, replies in gaming_cases(pairs).items():
        path = tmp / f"{name}.jsonl"
        rows = [{"prompt": p.prompt[-1].content, "reply": r} for p, r in zip(pairs, replies, strict=True)]
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        out = tmp / name
        args = [
            "eval",
            "--data",
            DATA,
            "--replies",
            str(path),
            "--scorer",
            "socratic",
            "--output-dir",
            str(out),
        ]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        reports[name] = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    return reports


@pytest.mark.slow
def test_the_chosen_replies_pass_every_guard(evaluated):
    report = evaluated["chosen"]
    assert report["failed_guards"] == [] and report["model"]["failed_guards"] == []
    assert report["settings"]["replies_scored"] == len(_pairs())
    assert report["model"]["preference"] == {}  # no model, no preference metrics


EXPECTED = {  # the guard each case must fail (it may fail others too)
    "one_word": "short",
    "same_reply": "duplicate",
    "frame": "duplicate",
    "rejected": "rejected_like",
    "prompt_copy": "prompt_copy",
    "loop": "looping",
    "empty": "empty",
    "other_language": "wrong_language",
}


@pytest.mark.parametrize("case", list(EXPECTED))
def test_every_way_of_gaming_fails_a_guard(evaluated, case):
    failed = evaluated[case]["failed_guards"]
    assert failed, case
    assert any(f.startswith(EXPECTED[case]) for f in failed), (case, failed)
    # in both languages: a guard is checked per language, so one cannot hide behind the other
    assert {f.split("(")[1].rstrip(")") for f in failed if f.startswith(EXPECTED[case])} == {"en", "ja"}


def test_some_gamed_replies_beat_the_references_on_the_scores_they_game(evaluated):
    """Why the guards are needed: on the mean scores alone, gaming wins."""
    scores = {name: r["model"]["generation"] for name, r in evaluated.items()}
    assert scores["one_word"]["socratic"] == scores["chosen"]["socratic"] == 1.0
    # a word of the subject is never off topic: precision alone rated one-word replies near the top
    assert scores["one_word"]["relevance_precision"] >= 0.75
    assert scores["one_word"]["relevance"] < 0.5 * scores["chosen"]["relevance"]  # coverage sees it
    assert scores["loop"]["rouge_l"] > 0.3 and scores["loop"]["relevance"] == pytest.approx(
        scores["chosen"]["relevance"]
    )
    assert scores["prompt_copy"]["relevance_precision"] >= 0.75


@pytest.mark.parametrize("metric", ["relevance", "relevance_precision", "socratic", "rouge_l", "bleu"])
def test_no_gamed_run_ranks_best(evaluated, metric):
    """The sweep's ranking, with the rejected answer dumps as the base model (what a base model does
    before it learns the style): whatever the metric, the references rank best and every gaming case
    fails its guards."""
    baseline = measured(evaluated["rejected"]["model"])
    rows = [Row(name, "evaluated", {}, measured(report["model"])) for name, report in evaluated.items()]
    ranked = rank_rows(rows, metric, baseline)
    top = best(ranked)
    assert top is not None and top.name == "chosen", [(r.name, r.value, r.guard_failures) for r in ranked]
    for row in ranked:
        assert bool(row.guard_failures) == (row.name != "chosen"), (row.name, row.guard_failures)


def test_replies_in_prefkit_generate_openai_and_alpaca_records(tmp_path):
    pairs = _pairs()[:3]
    prompts = [[m.to_dict() for m in p.prompt] for p in pairs]
    rows = [
        {"messages": prompts[0], "reply": pairs[0].chosen, "finish_reason": "stop"},  # prefkit generate
        {"messages": [*prompts[1], {"role": "assistant", "content": pairs[1].chosen}]},  # OpenAI chat
        {"instruction": pairs[2].prompt[-1].content, "output": pairs[2].chosen},  # alpaca
    ]
    path = tmp_path / "replies.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        app, ["eval", "--data", DATA, "--replies", str(path), "--output-dir", str(out)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    assert report["settings"]["replies_scored"] == 3
    generations = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert [g["reply"] for g in generations] == [p.chosen for p in pairs]
    assert "Replies read from" in (out / "eval.md").read_text(encoding="utf-8")


def test_replies_that_cannot_be_scored_are_named_by_line(tmp_path):
    pairs = _pairs()
    lines = [
        json.dumps({"prompt": pairs[0].prompt[-1].content, "reply": "A"}),
        json.dumps({"prompt": "A prompt that is in no held-out pair", "reply": "B"}),
        json.dumps({"prompt": pairs[0].prompt[-1].content, "reply": "C"}),
        json.dumps({"prompt": pairs[1].prompt[-1].content}),
        "{not json",
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = CliRunner().invoke(
        app, ["eval", "--data", DATA, "--replies", str(path), "--output-dir", str(tmp_path / "out")]
    )
    assert result.exit_code != 0
    assert "bad.jsonl:4" in result.output and "bad.jsonl:5" in result.output  # unreadable records first
    fixed = tmp_path / "fixed.jsonl"
    fixed.write_text("\n".join(lines[:3]) + "\n", encoding="utf-8")
    result = CliRunner().invoke(
        app, ["eval", "--data", DATA, "--replies", str(fixed), "--output-dir", str(tmp_path / "out")]
    )
    assert result.exit_code != 0
    assert "fixed.jsonl:2: no held-out pair has this prompt" in result.output
    assert "fixed.jsonl:3: one reply too many to the prompt answered at" in result.output
    assert not (tmp_path / "out").exists()


def test_baseline_replies_compare_two_systems(tmp_path, evaluated):
    pairs = _pairs()
    cases = gaming_cases(pairs)
    files = {}
    for name in ("chosen", "one_word"):
        path = tmp_path / f"{name}.jsonl"
        rows = [{"prompt": p.prompt[-1].content, "reply": r} for p, r in zip(pairs, cases[name], strict=True)]
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        files[name] = path
    out = tmp_path / "ab"
    args = [
        "eval",
        "--data",
        DATA,
        "--replies",
        str(files["one_word"]),
        "--baseline-replies",
        str(files["chosen"]),
    ]
    result = CliRunner().invoke(app, [*args, "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    assert report["baseline"]["failed_guards"] == []
    # one-word replies fall below the references' relevance in each language, besides being short
    assert any(f.startswith("relevance (en)") for f in report["failed_guards"])
    assert "failed guards" in result.output


def test_guard_limits_can_be_set(tmp_path):
    pairs = _pairs()
    path = tmp_path / "short.jsonl"
    rows = [{"prompt": p.prompt[-1].content, "reply": f"{subject(p.prompt[-1].content)}?"} for p in pairs]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    base = ["eval", "--data", DATA, "--replies", str(path)]
    result = CliRunner().invoke(app, [*base, "--guard-limit", "short=1", "--output-dir", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "a" / "eval.json").read_text(encoding="utf-8"))
    assert not any(f.startswith("short") for f in report["failed_guards"])
    bad = CliRunner().invoke(app, [*base, "--guard-limit", "shrot=1", "--output-dir", str(tmp_path / "b")])
    assert bad.exit_code != 0 and "FLAG=SHARE" in bad.output


def _write_replies(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_replies_beyond_the_evaluated_pairs_are_left_out_and_counted(tmp_path):
    pairs = _pairs()
    path = _write_replies(
        tmp_path / "all.jsonl", [{"prompt": p.prompt[-1].content, "reply": p.chosen} for p in pairs]
    )
    out = tmp_path / "capped"
    args = ["eval", "--data", DATA, "--replies", str(path), "--max-samples", "10", "--output-dir", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    assert (
        report["settings"]["replies_scored"] == 10
        and report["settings"]["replies_left_out"] == len(pairs) - 10
    )
    assert report["failed_guards"] == []


def test_prompts_left_unanswered_fail_the_evaluation(tmp_path):
    """A file that answers only the prompts its system does well on is not a clean bill of health."""
    pairs = _pairs()
    path = _write_replies(
        tmp_path / "one.jsonl", [{"prompt": pairs[0].prompt[-1].content, "reply": pairs[0].chosen}]
    )
    out = tmp_path / "one"
    result = CliRunner().invoke(
        app, ["eval", "--data", DATA, "--replies", str(path), "--output-dir", str(out)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    assert (
        f"unanswered: {len(pairs) - 1} of the {len(pairs)} held-out prompts have no reply"
        in report["failed_guards"]
    )
    assert "unanswered" in result.output


def test_pairs_that_share_a_prompt_take_its_replies_in_order(tmp_path):
    data = tmp_path / "pairs.jsonl"
    rows = [
        {"prompt": "What is a stack?", "chosen": "Which plate comes off a pile first?", "rejected": "LIFO."},
        {
            "prompt": "What is a stack?",
            "chosen": "If you push three books, which do you pop?",
            "rejected": "A list.",
        },
        {
            "prompt": "What is a queue?",
            "chosen": "Who is served first in a line at a shop?",
            "rejected": "FIFO.",
        },
    ]
    _write_replies(data, rows)
    replies = _write_replies(
        tmp_path / "r.jsonl", [{"prompt": r["prompt"], "reply": r["chosen"]} for r in rows]
    )
    out = tmp_path / "shared"
    result = CliRunner().invoke(
        app, ["eval", "--data", str(data), "--replies", str(replies), "--output-dir", str(out)]
    )
    assert result.exit_code == 0, result.output
    generations = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert [g["reply"] for g in generations] == [r["chosen"] for r in rows]
    # a multi-turn record is no answer to a single-turn pair, even with the same last question
    turns = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "What is a queue?"},
    ]
    odd = _write_replies(tmp_path / "odd.jsonl", [{"messages": turns, "reply": "Who is first?"}])
    result = CliRunner().invoke(
        app, ["eval", "--data", str(data), "--replies", str(odd), "--output-dir", str(tmp_path / "o")]
    )
    assert result.exit_code != 0 and "odd.jsonl:1: no held-out pair has this prompt" in result.output
