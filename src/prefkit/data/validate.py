"""Checks on parsed examples, and the report that `prefkit data check` prints and training obeys.

Problems come from two places: reading/parsing (malformed JSON, bad bytes, unknown roles, missing keys
-- see formats.py) and the checks here (empty content, chosen identical to rejected, duplicates,
huge fields, turns out of user/assistant order, and, given a tokenizer, length against ``cutoff_len``).
Every problem carries its ``file:line``. ERROR problems make an example unusable; WARNING problems do
not.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from prefkit.data.examples import (
    Example,
    ExampleError,
    Location,
    ParsedFile,
    PreferenceExample,
    Problem,
    Severity,
)
from prefkit.data.formats.fields import invisible, visible_text
from prefkit.data.templates import TemplateError
from prefkit.data.tokenize import ChatEncoder

# A field this long is almost always a mistake (a whole file pasted into a cell); we say so, and keep it.
HUGE_FIELD_CHARS = 100_000

# Chat-template control tokens of the common templates. Inside a message they would be read as the
# template's own markup (a turn ending in the middle of a reply). With a tokenizer, its own special
# tokens are checked too. `<s>`/`</s>` are left to the tokenizer's list: they are also HTML.
CONTROL_TOKENS = (
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<start_of_turn>",
    "<end_of_turn>",
    "[INST]",
    "[/INST]",
    "<|user|>",
    "<|assistant|>",
    "<|system|>",
)


@dataclass
class LengthStats:
    count: int
    min: int
    mean: float
    p50: float
    p95: float
    max: int

    @classmethod
    def of(cls, values: Sequence[int]) -> LengthStats | None:
        if not values:
            return None
        ordered = sorted(values)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        return cls(
            len(ordered), ordered[0], statistics.fmean(ordered), statistics.median(ordered), p95, ordered[-1]
        )


@dataclass
class DataReport:
    stage: str
    formats: dict[str, str | None]  # file -> detected (or forced) format
    records: int
    examples: int  # records that parsed into an example (before the checks here)
    problems: list[Problem]
    char_stats: dict[str, LengthStats | None] = field(default_factory=dict)
    token_stats: dict[str, LengthStats | None] = field(default_factory=dict)
    cutoff_len: int | None = None
    over_cutoff: int = 0
    over_cutoff_by: LengthStats | None = None
    # Truncated token features of each example that encoded cleanly, so training tokenises once.
    features: dict[Location, dict[str, list[int]]] = field(default_factory=dict, repr=False)
    usable_examples: int = 0  # examples with no ERROR problem (a file-level problem is no example)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.WARNING]

    @property
    def unusable(self) -> set[Location]:
        return {p.location for p in self.errors}

    @property
    def usable(self) -> int:
        return self.usable_examples

    @property
    def ok(self) -> bool:
        return not self.errors

    def count(self, kind: str) -> int:
        return sum(p.kind == kind for p in self.problems)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "formats": self.formats,
            "records": self.records,
            "usable": self.usable,
            "unusable": len(self.unusable),
            "ok": self.ok,
            "duplicates": self.count("duplicate"),
            "identical_pairs": self.count("identical_pair"),
            "char_stats": {k: asdict(v) if v else None for k, v in self.char_stats.items()},
            "token_stats": {k: asdict(v) if v else None for k, v in self.token_stats.items()},
            "cutoff_len": self.cutoff_len,
            "over_cutoff": self.over_cutoff,
            "over_cutoff_by": asdict(self.over_cutoff_by) if self.over_cutoff_by else None,
            "problems": [
                {
                    "location": str(p.location),
                    "severity": str(p.severity),
                    "kind": p.kind,
                    "message": p.message,
                }
                for p in self.problems
            ],
        }


def _fields(example: Example) -> dict[str, str]:
    """The texts of an example by name, for emptiness and size checks."""
    if isinstance(example, PreferenceExample):
        named = {f"prompt[{i}] ({m.role})": m.content for i, m in enumerate(example.prompt)}
        return {**named, "chosen": example.chosen, "rejected": example.rejected}
    return {f"messages[{i}] ({m.role})": m.content for i, m in enumerate(example.messages)}


def _key(example: Example) -> tuple:
    if isinstance(example, PreferenceExample):
        return (example.prompt, example.chosen, example.rejected)
    return (example.messages,)


def role_order(example: Example) -> Problem | None:
    """A warning for the first turn with the same role as the one before it (user, user, assistant).

    A warning, not an error: prefkit keeps the turns as written and the chat template renders them one
    after the other, which is what such data means (two user messages in a row) as often as it is a
    mistake (a lost turn). A template that refuses the order (Gemma's, Mistral's) makes it an error when
    the example is encoded, like any conversation the template refuses. Parsing has already refused a
    conversation that opens with the assistant, or a system message past the first turn."""
    prefix, messages = (
        ("prompt", example.prompt)
        if isinstance(example, PreferenceExample)
        else ("messages", example.messages)
    )
    start = 1 if messages and messages[0].role == "system" else 0
    for i in range(start + 1, len(messages)):
        if messages[i].role == messages[i - 1].role:
            roles = ", ".join(m.role for m in messages[start:])
            return Problem(
                example.location,
                f"{prefix}[{i}] ({messages[i].role}) follows another {messages[i].role} turn (the turns are "
                f"{roles}): chat models are trained on alternating user and assistant turns; prefkit keeps "
                "these as written, one after the other -- merge them, or add the turn that is missing",
                Severity.WARNING,
                "role_order",
            )
    return None


def check_example(example: Example, control_tokens: Sequence[str] = CONTROL_TOKENS) -> list[Problem]:
    """Content checks that need no tokenizer (``control_tokens``: the markup to warn about)."""
    loc = example.location
    order = role_order(example)
    problems = [order] if order is not None else []
    for name, text in _fields(example).items():
        if not visible_text(text) and not name.endswith("(system)"):
            hidden = sorted(set(invisible(text)))
            what = f" (only invisible characters: {', '.join(hidden)})" if hidden else ""
            problems.append(Problem(loc, f"{name} is empty{what}", Severity.ERROR, "empty_content"))
        found = next((token for token in control_tokens if token in text), None)
        if found is not None:
            problems.append(
                Problem(
                    loc,
                    f"{name} contains the chat-template token {found!r}: the model would read it as the "
                    "template's markup (a turn ending mid-message), not as text",
                    Severity.WARNING,
                    "control_token",
                )
            )
        if len(text) > HUGE_FIELD_CHARS:
            problems.append(
                Problem(
                    loc,
                    f"{name} is {len(text):,} characters (over {HUGE_FIELD_CHARS:,}): "
                    "is it meant to be this long?",
                    Severity.WARNING,
                    "huge_field",
                )
            )
    if (
        isinstance(example, PreferenceExample)
        and example.chosen.strip()
        and (example.chosen.strip() == example.rejected.strip())
    ):
        problems.append(
            Problem(
                loc,
                "chosen is identical to rejected: the pair teaches nothing",
                Severity.ERROR,
                "identical_pair",
            )
        )
    return problems


def encode(encoder: ChatEncoder, example: Example) -> tuple[dict[str, int], dict[str, list[int]]]:
    """Token lengths before truncation (for the report) and the truncated features (for training)."""
    if isinstance(example, PreferenceExample):
        pair = encoder.encode_pair(example)
        lengths = {
            "prompt": pair.full_prompt_len,
            "chosen": pair.full_chosen_len,
            "rejected": pair.full_rejected_len,
            "total": pair.full_prompt_len + max(pair.full_chosen_len, pair.full_rejected_len),
        }
        return lengths, pair.to_features()
    sft = encoder.encode_sft(example)
    return {"response": sft.full_response_len, "total": sft.full_len}, sft.to_features()


def check_files(parsed: Iterable[ParsedFile], stage: str, encoder: ChatEncoder | None = None) -> DataReport:
    """Run every check over parsed files and gather one report."""
    files = list(parsed)
    problems: list[Problem] = [p for f in files for p in f.problems]
    examples: list[Example] = [e for f in files for e in f.examples]
    for f in files:
        if f.records == 0 and not f.problems:
            # `train` refuses a file with nothing in it; `data check` says so too rather than "clean".
            empty = Problem(Location(f.path), "the file holds no records", Severity.ERROR, "empty_file")
            problems.append(empty)
    control_tokens = _control_tokens(encoder)

    seen: dict[tuple, Location] = {}
    chars: dict[str, list[int]] = {}
    tokens: dict[str, list[int]] = {}
    over_by: list[int] = []
    features: dict[Location, dict[str, list[int]]] = {}
    for example in examples:
        found = check_example(example, control_tokens)
        problems += found
        first = seen.setdefault(_key(example), example.location)
        if first != example.location:
            problems.append(Problem(example.location, f"duplicate of {first}", Severity.WARNING, "duplicate"))
        if isinstance(example, PreferenceExample):
            lengths = {
                "prompt": sum(len(m.content) for m in example.prompt),
                "chosen": len(example.chosen),
                "rejected": len(example.rejected),
            }
        else:
            lengths = {"conversation": sum(len(m.content) for m in example.messages)}
        for name, n in lengths.items():
            chars.setdefault(name, []).append(n)
        if encoder is None:
            continue
        try:
            lengths, features[example.location] = encode(encoder, example)
        except (ExampleError, TemplateError) as err:
            kind = getattr(err, "kind", "template")
            said = {p.kind for p in found}
            if "identical_pair" in said:  # replies equal but for outer whitespace: no cutoff_len advice
                said.add("identical_after_truncation")
            if kind not in said:  # the text's check said it already
                problems.append(Problem(example.location, str(err), Severity.ERROR, kind))
            continue
        for name, n in lengths.items():
            tokens.setdefault(name, []).append(n)
        excess = lengths["total"] - encoder.cutoff_len
        if excess > 0:
            over_by.append(excess)
            problems.append(
                Problem(
                    example.location,
                    f"{lengths['total']} tokens, over cutoff_len {encoder.cutoff_len} by {excess}: "
                    "it will be "
                    "truncated (see the truncation policy)",
                    Severity.WARNING,
                    "over_cutoff",
                )
            )

    problems.sort(key=lambda p: (p.location.file, p.location.line or 0, p.location.row or 0))
    unusable = {p.location for p in problems if p.severity is Severity.ERROR}
    return DataReport(
        stage=stage,
        formats={f.path: f.format for f in files},
        records=sum(f.records for f in files),
        examples=len(examples),
        problems=problems,
        char_stats={k: LengthStats.of(v) for k, v in chars.items()},
        token_stats={k: LengthStats.of(v) for k, v in tokens.items()},
        cutoff_len=encoder.cutoff_len if encoder else None,
        over_cutoff=len(over_by),
        over_cutoff_by=LengthStats.of(over_by),
        features=features,
        usable_examples=sum(e.location not in unusable for e in examples),
    )


def _control_tokens(encoder: ChatEncoder | None) -> tuple[str, ...]:
    if encoder is None:
        return CONTROL_TOKENS
    special = getattr(encoder.tokenizer, "all_special_tokens", None) or []
    return tuple(dict.fromkeys([*CONTROL_TOKENS, *(t for t in special if isinstance(t, str) and len(t) > 1)]))


def usable_examples(parsed: Iterable[ParsedFile], report: DataReport) -> list[Example]:
    """The examples with no ERROR problem, in file order."""
    bad = report.unusable
    return [e for f in parsed for e in f.examples if e.location not in bad]
