"""The arena's files and bookkeeping without a server: the votes file (append, torn lines, bad lines),
which pair answers next, the life of a battle, the prompts file, and the export to preference pairs
(read back by prefkit's own data reader and checks)."""

from __future__ import annotations

import json
import os
import random
from collections import Counter

import pytest

from prefkit.arena.battles import GRACE, BattleBook, BattleError
from prefkit.arena.export import export_pairs
from prefkit.arena.prompts import load_prompts
from prefkit.arena.votes import Side, Vote, VotesError, append_vote, read_votes
from prefkit.data.examples import Message
from prefkit.data.formats.files import parse_file
from prefkit.data.validate import check_files
from prefkit.errors import BadDataError, PrefkitError

PROMPT = (Message("user", "What is 7 x 8?"),)


def vote(
    a: str = "base",
    b: str = "dpo",
    winner: str = "a",
    *,
    ra: str = "56.",
    rb: str = "What do you think?",
    **kw,
) -> Vote:
    return Vote(
        kw.pop("id", f"id-{random.random()}"),
        1.0,
        kw.pop("prompt", PROMPT),
        Side(a, ra, {"max_new_tokens": 8}, kw.pop("fa", "stop")),
        Side(b, rb, {"max_new_tokens": 8}, kw.pop("fb", "stop")),
        winner,  # type: ignore[arg-type]
        kw.pop("voter", None),
    )


# -- the votes file --------------------------------------------------------------------------------------


def test_votes_round_trip_and_a_missing_file_has_none(tmp_path):
    path = tmp_path / "arena" / "votes.jsonl"
    assert read_votes(path).votes == []
    cast = [
        vote(winner="a", voter="ana"),
        vote(winner="both_bad", prompt=(Message("system", "Be brief."), *PROMPT)),
    ]
    for v in cast:
        append_vote(path, v)
    read = read_votes(path)
    assert read.votes == cast and read.lines == [1, 2] and read.skipped == []
    line = json.loads(path.read_text().splitlines()[0])
    assert set(line) == {"id", "time", "prompt", "a", "b", "winner", "voter", "prompt_index"}
    assert line["a"] == {
        "model": "base",
        "reply": "56.",
        "finish_reason": "stop",
        "settings": {"max_new_tokens": 8},
    }


def test_a_torn_last_line_is_skipped_and_the_next_vote_is_whole(tmp_path):
    path = tmp_path / "votes.jsonl"
    append_vote(path, first := vote())
    whole = json.dumps(vote().to_dict())
    with path.open("a") as f:
        f.write(whole[: len(whole) // 2])  # a crash in the middle of a write
    append_vote(path, last := vote(winner="b"))
    read = read_votes(path)
    assert read.votes == [first, last] and read.lines == [1, 3]
    assert [s.line for s in read.skipped] == [2]
    assert read.warnings()[0].startswith(f"{path}:2: skipped: not a whole JSON line")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r.update(winner="A"), 'winner: expected "a" | "b" | "tie" | "both_bad", got "A"'),
        (lambda r: r.pop("b"), "missing key 'b'"),
        (lambda r: r["a"].update(reply=None), "a.reply: expected the reply's text"),
        (lambda r: r["prompt"].append({"role": "bot", "content": "x"}), "prompt[1]: expected a message"),
        (lambda r: r.update(voter=3), "voter: expected a string or null, got 3"),
    ],
)
def test_a_whole_line_that_is_not_a_vote_names_its_line_and_key(tmp_path, edit, message):
    path = tmp_path / "votes.jsonl"
    append_vote(path, vote())
    record = vote().to_dict()
    edit(record)
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
    with pytest.raises(VotesError) as err:
        read_votes(path)
    assert str(err.value).startswith(f"{path}:2: ") and message in str(err.value)


# -- pairs and battles ------------------------------------------------------------------------------------


def test_every_pair_gets_battles_in_turn_and_sides_are_shuffled():
    models = ["base", "dpo", "simpo", "orpo"]
    prior = [vote("base", "dpo")] * 5  # this pair has votes already: it waits until the others catch up
    book = BattleBook(models, prior, rng=random.Random(0))
    opened = [book.open(PROMPT) for _ in range(5 * 5)]
    pairs = Counter(tuple(sorted(b.models.values())) for b in opened)
    assert ("base", "dpo") not in pairs and set(pairs.values()) == {5} and len(pairs) == 5
    opened += [book.open(PROMPT) for _ in range(6)]  # now all pairs are even: one more each
    pairs = Counter(tuple(sorted(b.models.values())) for b in opened[25:])
    assert len(pairs) == 6 and set(pairs.values()) == {1}
    lefts = Counter(b.models["a"] for b in opened)
    assert all(lefts[m] > 0 for m in models)  # no model always on the same side


def test_a_battle_takes_one_vote_once_its_replies_are_done():
    book = BattleBook(["base", "dpo"], rng=random.Random(1))
    battle = book.open(PROMPT)
    with pytest.raises(BattleError) as err:
        book.start_vote(battle.id, "a", None)
    assert err.value.code == "battle_not_ready"
    battle.replies = {"a": "56.", "b": "Why?"}
    battle.state = "ready"
    cast = book.start_vote(battle.id, "b", "ana")
    assert (cast.winner, cast.voter, cast.a.reply, cast.b.reply) == ("b", "ana", "56.", "Why?")
    with pytest.raises(BattleError) as err:  # a second vote while the first is being written
        book.start_vote(battle.id, "a", None)
    assert err.value.code == "already_voted"
    book.recorded(cast)
    assert book.total_votes == 1 and book.voted[("base", "dpo")] == 1
    with pytest.raises(BattleError) as err:
        book.start_vote(battle.id, "a", None)
    assert err.value.code == "already_voted"
    with pytest.raises(BattleError) as err:
        book.start_vote("unknown", "a", None)
    assert err.value.status == 404


def test_a_vote_not_written_can_be_cast_again_and_old_battles_are_forgotten():
    now = [0.0]
    book = BattleBook(["base", "dpo"], rng=random.Random(2), ttl=3600, clock=lambda: now[0])
    battle = book.open(PROMPT)
    battle.state = "ready"
    book.not_recorded(book.start_vote(battle.id, "a", None))  # the disk was full: nothing counted
    assert book.total_votes == 0 and battle.state == "ready"
    now[0] = 3601.0
    book.open(PROMPT)
    with pytest.raises(BattleError):
        book.get(battle.id)  # waited past its ttl


def test_a_flood_of_battles_cannot_push_out_another_voters_recent_battle():
    now = [0.0]
    book = BattleBook(["base", "dpo"], rng=random.Random(3), max_open=3, clock=lambda: now[0])
    mine = book.open(PROMPT)
    flood = [book.open(PROMPT) for _ in range(2)]
    with pytest.raises(BattleError) as err:  # full of battles younger than GRACE: refused, none forgotten
        book.open(PROMPT)
    assert err.value.status == 429 and book.get(mine.id) is mine
    flood[0].state = "voted"
    book.open(PROMPT)  # a voted battle makes room first
    assert flood[0].id not in book.battles and book.get(mine.id) is mine
    now[0] = GRACE + 1  # now the old unvoted ones may go, oldest first
    book.open(PROMPT)
    assert mine.id not in book.battles and flood[1].id in book.battles


def test_abandoned_battles_stop_holding_their_pair_back():
    now = [0.0]
    book = BattleBook(["a", "b", "c"], rng=random.Random(4), clock=lambda: now[0])
    first = book.open(PROMPT)  # never voted on
    taken = tuple(sorted(first.models.values()))
    assert all(tuple(sorted(book.open(PROMPT).models.values())) != taken for _ in range(2))
    now[0] = GRACE + 1
    pairs = Counter(tuple(sorted(book.open(PROMPT).models.values())) for _ in range(3))
    assert pairs[taken] == 1  # after GRACE the abandoned battle no longer counts as load


def test_one_model_is_no_arena():
    with pytest.raises(PrefkitError, match="at least two models"):
        BattleBook(["base"])


# -- prompts ----------------------------------------------------------------------------------------------


def test_prompts_come_from_any_file_generate_reads_and_a_bad_record_stops_the_server(tmp_path):
    good = tmp_path / "prompts.jsonl"
    rows = [
        {"prompt": "Hi"},
        {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]},
        {"prompt": "Why?", "chosen": "Because.", "rejected": "No."},
    ]
    good.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert load_prompts(good) == [
        (Message("user", "Hi"),),
        (Message("user", "2+2?"),),  # the reference reply is not part of the prompt
        (Message("user", "Why?"),),
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "Hi"}\n{"text": "no prompt"}\n')
    with pytest.raises(
        BadDataError,
        match=r"bad\.jsonl: 1 record\(s\) hold no usable prompt:\n.*bad\.jsonl:2: no prompt found",
    ):
        load_prompts(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(BadDataError):
        load_prompts(empty)


# -- export -----------------------------------------------------------------------------------------------


def test_export_writes_decisive_votes_as_pairs_prefkit_reads_and_counts_the_rest(tmp_path):
    votes = tmp_path / "votes.jsonl"
    cast = [
        vote(winner="a", ra="56.", rb="What do you think?"),  # chosen 56.
        vote(winner="b", ra="56.", rb="What do you think?", fb="length"),  # chosen the question, cut off
        vote(winner="tie"),
        vote(winner="both_bad"),
        vote(winner="a", ra="Same.", rb="Same."),  # identical replies: refused
        vote(winner="b", ra="56.", rb=" "),  # an empty chosen reply: refused
        vote("base", "simpo", winner="a", ra="Fifty-six."),
        vote(winner="a", prompt=(Message("system", "Be brief."), *PROMPT), voter="ana"),
    ]
    for v in cast:
        append_vote(votes, v)
    out = tmp_path / "pairs.jsonl"
    result = export_pairs(votes, out)
    assert (result.written, result.ties, result.both_bad, result.cut_off, result.contradicting) == (
        4,
        1,
        1,
        1,
        2,
    )
    assert [r.split(": ")[0] for r in result.refused] == [f"{votes}:5", f"{votes}:6"]
    assert "identical" in result.refused[0] and "empty" in result.refused[1]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[0]["chosen"] == [{"role": "assistant", "content": "56."}]
    assert records[0]["rejected"] == [{"role": "assistant", "content": "What do you think?"}]
    assert records[1]["arena"]["chosen_model"] == "dpo" and records[1]["arena"]["rejected_model"] == "base"
    assert (
        records[3]["prompt"][0] == {"role": "system", "content": "Be brief."}
        and records[3]["arena"]["voter"] == "ana"
    )

    # prefkit's own reader and checks take every written pair as it is
    report = check_files([parse_file(out, stage="dpo")], "dpo")
    assert report.examples == report.usable_examples == 4

    only = export_pairs(votes, tmp_path / "dpo-simpo.jsonl", models=["base", "simpo"])
    assert only.written == 1 and only.other_models == 7


def test_export_never_overwrites_by_surprise(tmp_path):
    votes = tmp_path / "votes.jsonl"
    append_vote(votes, vote())
    out = tmp_path / "pairs.jsonl"
    out.write_text("mine\n")
    with pytest.raises(PrefkitError, match="already exists; pass --force"):
        export_pairs(votes, out)
    assert out.read_text() == "mine\n"
    assert export_pairs(votes, out, force=True).written == 1
    with pytest.raises(PrefkitError, match="the votes file itself"):
        export_pairs(votes, votes, force=True)
    with pytest.raises(PrefkitError, match="name two models or more"):
        export_pairs(votes, tmp_path / "x.jsonl", models=["base"])
    with pytest.raises(VotesError, match="no votes yet"):
        export_pairs(tmp_path / "none.jsonl", tmp_path / "y.jsonl")


def test_a_vote_whose_sync_fails_is_cut_back_out_so_a_retry_counts_once(tmp_path, monkeypatch):
    path = tmp_path / "votes.jsonl"
    append_vote(path, first := vote())
    before = path.read_bytes()

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:  # the one way to make a real fsync fail on demand
        patched.setattr("os.fsync", full_disk)
        with pytest.raises(OSError):
            append_vote(path, second := vote(winner="b"))
    assert path.read_bytes() == before  # not counted means not in the file
    append_vote(path, second)  # the voter tries again
    assert read_votes(path).votes == [first, second]


def test_a_battle_twice_in_the_file_counts_once(tmp_path):
    path = tmp_path / "votes.jsonl"
    one = vote(id="same")
    append_vote(path, one)
    append_vote(path, vote(id="same", winner="b"))  # a copied line, or two files joined
    read = read_votes(path)
    assert read.votes == [one] and [s.line for s in read.skipped] == [2]
    assert "voted on at line 1 already" in read.skipped[0].reason


def test_a_lock_held_elsewhere_fails_the_vote_in_time_and_writes_nothing(tmp_path):
    from filelock import FileLock

    from prefkit.arena.votes import VotesLocked

    path = tmp_path / "votes.jsonl"
    with FileLock(str(path) + ".lock"), pytest.raises(VotesLocked, match="locked by another process"):
        append_vote(path, vote(), lock_timeout=0.2)
    assert read_votes(path).votes == []


def test_export_of_no_decisive_vote_writes_nothing_and_says_why(tmp_path):
    votes = tmp_path / "votes.jsonl"
    append_vote(votes, vote(winner="tie"))
    append_vote(votes, vote(winner="both_bad"))
    out = tmp_path / "pairs.jsonl"
    with pytest.raises(PrefkitError, match=r"no vote to export as a pair \(1 ties, 1 both bad"):
        export_pairs(votes, out)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(PrefkitError, match="does not exist"):
        export_pairs(votes, tmp_path / "no" / "pairs.jsonl")


def test_a_full_book_answers_429_over_http_not_500(tmp_path):
    from prefkit.serve.arena import Arena, _open
    from prefkit.web.errors import APIError

    book = BattleBook(["base", "dpo"], max_open=1)
    arena = Arena(tmp_path / "votes.jsonl", [])
    _open(arena, book, PROMPT, None)
    with pytest.raises(APIError) as err:
        _open(arena, book, PROMPT, None)
    assert (err.value.status, err.value.code) == (429, "too_many_battles")


def test_voter_names_keep_joiners_and_lose_edges():
    from prefkit.serve.arena import _voter
    from prefkit.web.errors import APIError

    assert _voter(" \tbob ") == "bob"
    assert _voter("می\u200cخواهم") == "می\u200cخواهم"  # a zero-width non-joiner belongs in Persian words
    assert _voter("\U0001f469\u200d\U0001f4bb") == "\U0001f469\u200d\U0001f4bb"
    assert _voter("   ") is None
    for bad in ("a\nb", "\x1b[2J", "\u202eevil"):
        with pytest.raises(APIError):
            _voter(bad)


def test_the_exported_file_is_readable_like_any_written_file(tmp_path):
    votes = tmp_path / "votes.jsonl"
    append_vote(votes, vote())
    out = tmp_path / "pairs.jsonl"
    export_pairs(votes, out)
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's private 0600
