"""The arena's decisive votes as preference pairs: the next round's DPO data.

Each vote for ``a`` or ``b`` becomes one line in TRL's conversational shape, which ``prefkit data
check`` and ``prefkit train`` read as they are::

    {"prompt": [messages], "chosen": [{"role": "assistant", "content": winner's reply}],
     "rejected": [{"role": "assistant", "content": loser's reply}],
     "arena": {"id", "time", "voter", "chosen_model", "rejected_model"}}

Nothing is dropped silently. Left out, and counted: ties and both-bad votes (no preference), votes
between models not named in ``models``, and pairs the data checks would refuse (an empty reply, two
identical replies, a prompt that starts with the assistant); each of those names its line in the votes
file. These checks read text, not tokens: a pair whose replies differ only past ``cutoff_len`` is
found by ``prefkit data check FILE --model M --cutoff-len N``, which the docs say to run. Kept, and
counted: pairs whose chosen reply was cut off at ``max_tokens`` (DPO would learn to stop mid-sentence if
there are many: the count says so), and votes that contradict another vote on the same prompt and
replies (people disagree; both stay, as two votes). No pair at all is an error: an empty file would
only fail later, at ``data check`` or ``train``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefkit.arena.votes import Vote, VotesError, VotesRead, read_votes
from prefkit.data.examples import ExampleError, Location, Severity
from prefkit.data.formats.preference import PromptChat
from prefkit.data.validate import check_example
from prefkit.errors import PrefkitError


@dataclass
class ExportResult:
    output: Path
    written: int = 0
    ties: int = 0
    both_bad: int = 0
    other_models: int = 0
    cut_off: int = 0  # written pairs whose chosen reply ended at max_tokens
    contradicting: int = 0  # written pairs whose prompt and replies another vote preferred the other way
    refused: list[str] = field(default_factory=list)  # "votes.jsonl:LINE: why", left out
    skipped_lines: list[str] = field(default_factory=list)  # torn lines of the votes file

    def summary(self) -> str:
        """What was left out, in words."""
        parts = [
            f"{self.ties} ties",
            f"{self.both_bad} both bad",
            f"{len(self.refused)} refused by the data checks",
        ]
        if self.other_models:
            parts.append(f"{self.other_models} between other models")
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "written": self.written,
            "left_out": {
                "ties": self.ties,
                "both_bad": self.both_bad,
                "other_models": self.other_models,
                "refused": self.refused,
            },
            "cut_off": self.cut_off,
            "contradicting": self.contradicting,
            "skipped_lines": self.skipped_lines,
        }


def pair_record(vote: Vote) -> dict[str, Any]:
    """A decisive vote as a prompt/chosen/rejected record."""
    chosen, rejected = (vote.a, vote.b) if vote.winner == "a" else (vote.b, vote.a)
    return {
        "prompt": [m.to_dict() for m in vote.prompt],
        "chosen": [{"role": "assistant", "content": chosen.reply}],
        "rejected": [{"role": "assistant", "content": rejected.reply}],
        "arena": {
            "id": vote.id,
            "time": vote.time,
            "voter": vote.voter,
            "chosen_model": chosen.model,
            "rejected_model": rejected.model,
        },
    }


def export_pairs(
    votes_file: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    models: Sequence[str] = (),
    force: bool = False,
) -> ExportResult:
    """Write the decisive votes of ``votes_file`` to ``output`` (JSONL) as preference pairs; with
    ``models``, only votes between two of them. The file is written whole or not at all."""
    source, target = Path(votes_file), Path(output)
    if len(models) == 1:
        raise PrefkitError(f"--model {models[0]}: name two models or more (votes between them are exported)")
    if target.is_dir():
        raise PrefkitError(f"--output {target} is a folder; name the output file")
    if not target.parent.is_dir():
        raise PrefkitError(f"--output {target}: the folder {target.parent} does not exist")
    if _same_file(source, target):
        raise PrefkitError(f"--output {target}: that is the votes file itself; name another file")
    if target.exists() and not force:
        raise PrefkitError(f"--output {target} already exists; pass --force to replace it")
    if not source.exists():
        raise VotesError(f"{source}: no votes yet (the arena writes this file when the first vote is cast)")
    read = read_votes(source)
    result = ExportResult(target, skipped_lines=read.warnings())
    records = _records(read, models, result)
    if not records:
        # An empty file would pass here and fail at `data check` and `train` ("holds no records").
        raise PrefkitError(f"{source}: no vote to export as a pair ({result.summary()}); nothing written")
    _contradictions(records, result)
    _write_whole(target, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    result.written = len(records)
    return result


def _records(read: VotesRead, models: Sequence[str], result: ExportResult) -> list[dict[str, Any]]:
    wanted, source = set(models), read.path
    records = []
    for line, vote in zip(read.lines, read.votes, strict=True):
        if wanted and not set(vote.models) <= wanted:
            result.other_models += 1
        elif vote.winner == "tie":
            result.ties += 1
        elif vote.winner == "both_bad":
            result.both_bad += 1
        elif (why := _refusal(pair_record(vote), Location(str(source), line))) is not None:
            result.refused.append(f"{source}:{line}: {why}")
        else:
            records.append(pair_record(vote))
            winner = vote.a if vote.winner == "a" else vote.b
            result.cut_off += winner.finish_reason == "length"
    return records


def _refusal(record: dict[str, Any], location: Location) -> str | None:
    """Why ``prefkit data check`` would refuse this pair, or None."""
    try:
        example = PromptChat().parse(record, location)
    except ExampleError as err:
        return str(err)
    errors = [p.message for p in check_example(example) if p.severity is Severity.ERROR]
    return "; ".join(errors) or None


def _contradictions(records: list[dict[str, Any]], result: ExportResult) -> None:
    def key(r: dict[str, Any], flip: bool) -> str:
        chosen, rejected = r["chosen"][0]["content"], r["rejected"][0]["content"]
        return json.dumps([r["prompt"], *((rejected, chosen) if flip else (chosen, rejected))])

    seen = Counter(key(r, False) for r in records)
    result.contradicting = sum(seen[key(r, True)] > 0 for r in records)


def _write_whole(target: Path, text: str) -> None:
    """``text`` to ``target`` through a temporary file in its folder, synced, then renamed over it: a
    reader sees the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        # mkstemp makes the file private (0600): give it the mode a plainly written file would have (the
        # replaced file's, or the umask's), so a trainer running as another user can read it
        os.fchmod(fd, target.stat().st_mode & 0o777 if target.exists() else 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False
