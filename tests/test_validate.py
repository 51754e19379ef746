"""Content checks and the data report (parsing problems are tested in test_readers/test_formats)."""

from __future__ import annotations

import copy
import json

from tiny import GEMMA_TEMPLATE

from prefkit.data.examples import Location, Message, ParsedFile, PreferenceExample, Severity, SFTExample
from prefkit.data.formats import parse_file
from prefkit.data.tokenize import ChatEncoder
from prefkit.data.validate import HUGE_FIELD_CHARS, LengthStats, check_files, usable_examples


def ex(line: int, prompt: str, chosen: str, rejected: str) -> PreferenceExample:
    return PreferenceExample((Message("user", prompt),), chosen, rejected, Location("d.jsonl", line))


def parsed(*examples) -> ParsedFile:
    return ParsedFile("d.jsonl", "prompt-text", "dpo", examples=list(examples), records=len(examples))


def test_clean_file_is_ok():
    report = check_files([parsed(ex(1, "Q1", "good", "bad"), ex(2, "Q2", "good", "bad"))], "dpo")
    assert report.ok and report.usable == 2 and report.problems == []
    assert report.char_stats["chosen"].max == 4


def test_each_content_problem_names_its_line():
    report = check_files(
        [
            parsed(
                ex(1, "Q1", "good", "bad"),
                ex(2, "Q2", "", "bad"),  # empty chosen
                ex(3, "Q3", "same", "same "),  # identical after stripping
                ex(4, "Q1", "good", "bad"),  # duplicate of line 1
                ex(5, "Q5", "x" * (HUGE_FIELD_CHARS + 1), "bad"),  # huge, still usable
                ex(6, "  ", "a", "b"),  # empty prompt
            )
        ],
        "dpo",
    )
    by_line = {p.location.line: p for p in report.problems}
    assert str(by_line[2]) == "d.jsonl:2: chosen is empty"
    assert by_line[3].kind == "identical_pair" and by_line[3].severity is Severity.ERROR
    assert by_line[4].kind == "duplicate" and "duplicate of d.jsonl:1" in by_line[4].message
    assert by_line[4].severity is Severity.WARNING
    assert by_line[5].kind == "huge_field" and "100,001 characters" in by_line[5].message
    assert by_line[6].kind == "empty_content" and "prompt[0] (user)" in by_line[6].message
    assert not report.ok
    assert {loc.line for loc in report.unusable} == {2, 3, 6}
    assert report.usable == 3
    kept = usable_examples([parsed(*[ex(i, f"Q{i}", "g", "b") for i in range(1, 7)])], report)
    assert [e.location.line for e in kept] == [1, 4, 5]


def test_token_lengths_and_over_cutoff(tokenizer):
    encoder = ChatEncoder(tokenizer, None, cutoff_len=32)
    report = check_files(
        [parsed(ex(1, "Q", "short", "bad"), ex(2, "Q2 " + "long " * 40, "good", "bad"))], "dpo", encoder
    )
    assert report.over_cutoff == 1
    over = [p for p in report.problems if p.kind == "over_cutoff"]
    assert [p.location.line for p in over] == [2] and "over cutoff_len 32 by" in over[0].message
    assert report.token_stats["total"].max > 32
    assert report.ok  # over cutoff is truncated, not unusable
    assert set(report.features) == {Location("d.jsonl", 1), Location("d.jsonl", 2)}
    assert len(report.features[Location("d.jsonl", 2)]["prompt_ids"]) <= 32


def test_unencodable_example_is_an_error(tokenizer):
    encoder = ChatEncoder(tokenizer, None, cutoff_len=2)  # too small for the assistant header
    report = check_files([parsed(ex(1, "Q", "a", "b"))], "dpo", encoder)
    assert not report.ok and report.errors[0].kind == "too_long"


def test_sft_examples_are_checked_too():
    sft = SFTExample((Message("user", "hi"), Message("assistant", "")), Location("s.jsonl", 3))
    report = check_files([ParsedFile("s.jsonl", "messages", "sft", examples=[sft], records=1)], "sft")
    assert str(report.errors[0]) == "s.jsonl:3: messages[1] (assistant) is empty"


def test_length_stats():
    s = LengthStats.of([1, 2, 3, 4, 100])
    assert (s.min, s.max, s.p50, s.count) == (1, 100, 3, 5)
    assert LengthStats.of([]) is None


def test_turns_out_of_user_assistant_order_are_named(tmp_path, tokenizer):
    """Issue #25: user, user, assistant (107 fuzz inputs) passed without a word. It is a warning naming the
    turn -- the turns are trained as written -- and an error where the chat template refuses the order."""
    conversations = [
        ["user", "user", "assistant"],
        ["system", "user", "assistant", "assistant"],
        ["user", "assistant", "user", "assistant"],  # in order: nothing to say
    ]
    path = tmp_path / "d.jsonl"
    path.write_text(
        "".join(
            json.dumps({"messages": [{"role": r, "content": f"{r} {i}"} for i, r in enumerate(roles)]}) + "\n"
            for roles in conversations
        )
    )
    parsed_file = parse_file(path)
    report = check_files([parsed_file], "sft", ChatEncoder(tokenizer, None, 512))
    assert [(p.location.line, p.severity, p.kind) for p in report.problems] == [
        (1, Severity.WARNING, "role_order"),
        (2, Severity.WARNING, "role_order"),
    ]
    first = f"{path}:1: (warning) messages[1] (user) follows another user turn"
    assert str(report.problems[0]).startswith(f"{first} (the turns are user, user, assistant)")
    assert report.problems[1].message.startswith("messages[3] (assistant) follows another assistant turn")
    assert report.usable == 3

    pair = PreferenceExample(
        (Message("user", "q"), Message("user", "more")), "a", "b", Location("p.jsonl", 4)
    )
    problems = check_files([ParsedFile("p.jsonl", "prompt-chat", "dpo", examples=[pair], records=1)], "dpo")
    assert [(str(p.location), p.kind) for p in problems.problems] == [("p.jsonl:4", "role_order")]

    # Gemma's own template refuses non-alternating roles: then the example is unusable, and says why.
    gemma = copy.deepcopy(tokenizer)
    gemma.chat_template = GEMMA_TEMPLATE
    refused = check_files([parse_file(path)], "sft", ChatEncoder(gemma, None, 512))
    assert [(p.location.line, p.kind) for p in refused.errors] == [(1, "template"), (2, "template")]
    assert "roles must alternate" in refused.errors[0].message and refused.usable == 1
