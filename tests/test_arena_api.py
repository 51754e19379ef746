"""The arena over HTTP, against a real `prefkit serve --ui --prompts` process: the tiny model served as
``tiny`` and an adapter (``tutor``) whose greedy reply is a fixed question. A scripted study of 20 blind
battles -- a voter who prefers a reply that asks the learner something -- then `prefkit arena stats`,
`prefkit arena export`, `prefkit data check` on the export and one training step on it. Then the flow's
errors: each a 4xx naming what is wrong, and no vote counted twice."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from uikit import build_reply_adapter

from prefkit.arena.votes import read_votes
from prefkit.serve.process import ServerProcess

pytestmark = pytest.mark.slow  # a live server

KEY = "sk-arena-" + "0123456789abcdef"
TUTOR_REPLY = "What comes next?"
MAX_TOKENS = 32
PROMPTS = [f"Explain step {i} of long division." for i in range(6)]


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("arena-runs")


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("arena-prompts") / "held_out.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return path


@pytest.fixture(scope="module")
def server(tiny_model_dir, runs_dir, prompts_file, tmp_path_factory):
    tutor = build_reply_adapter(tiny_model_dir, tmp_path_factory.mktemp("tutor") / "a", TUTOR_REPLY)
    args = [
        "--model", str(tiny_model_dir), "--served-model-name", "tiny", "--dtype", "fp32",
        "--adapter", f"tutor={tutor}", "--ui", "--runs", str(runs_dir), "--prompts", str(prompts_file),
        "--max-tokens", "64", "--log-level", "warning",
    ]  # fmt: skip
    log = tmp_path_factory.mktemp("arena-serve") / "server.log"
    with ServerProcess(args, log=log, env={"PREFKIT_API_KEY": KEY, "OMP_NUM_THREADS": "1"}) as process:
        yield process
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def call(server, method: str, path: str, body: dict | None = None, key: str | None = KEY) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def stream_battle(server, body: dict) -> list[dict | str]:
    """The events of a streamed battle, in order ("[DONE]" as a string)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    try:
        conn.request(
            "POST", "/ui/api/arena/battles", body=json.dumps({**body, "stream": True}), headers=headers
        )
        response = conn.getresponse()
        assert response.status == 200, response.read()
        assert response.getheader("content-type").startswith("text/event-stream")
        raw = response.read().decode()
    finally:
        conn.close()
    events: list[dict | str] = []
    for block in raw.split("\n\n"):
        if block.startswith("data: "):
            data = block[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def scripted_voter(a: str, b: str) -> str:
    """Prefers the reply that asks the learner a question; neither or both: a tie."""
    asks_a, asks_b = a.strip().endswith("?"), b.strip().endswith("?")
    return "a" if asks_a and not asks_b else "b" if asks_b and not asks_a else "tie"


def prefkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "prefkit", *args], capture_output=True, text=True, timeout=600, check=False
    )


def test_a_scripted_study_gives_stats_and_pairs_that_train(server, runs_dir, tiny_model_dir, tmp_path):
    status, info = call(server, "GET", "/ui/api/arena")
    assert status == 200
    assert info["enabled"] and info["models"] == ["tiny", "tutor"] and info["prompts"] == len(PROMPTS)
    votes_before = info["votes"]
    seen_sides = set()
    drawn_order: list[int] = []
    for i in range(20):
        status, drawn = call(server, "GET", "/ui/api/arena/prompt")
        assert status == 200 and drawn["prompt"] == [{"role": "user", "content": PROMPTS[drawn["index"]]}]
        drawn_order.append(drawn["index"])
        # the last battle sends an edited prompt: its place in the file is not recorded
        prompt = drawn["prompt"] if i < 19 else [{"role": "user", "content": "Explain step 99."}]
        body = {"prompt": prompt, "prompt_index": drawn["index"], "max_tokens": MAX_TOKENS}
        status, battle = call(server, "POST", "/ui/api/arena/battles", body)
        assert status == 200, battle
        assert set(battle) == {"id", "prompt", "a", "b"}  # no model names before the vote
        a, b = battle["a"]["reply"], battle["b"]["reply"]
        winner = scripted_voter(a, b)
        status, told = call(
            server,
            "POST",
            f"/ui/api/arena/battles/{battle['id']}/vote",
            {"winner": winner, "voter": f"v{i % 3}"},
        )
        assert status == 200, told
        assert {told["a"]["model"], told["b"]["model"]} == {"tiny", "tutor"}
        tutor_side = "a" if told["a"]["model"] == "tutor" else "b"
        assert battle[tutor_side]["reply"] == TUTOR_REPLY  # the adapter's greedy reply, shown blind
        seen_sides.add(tutor_side)
        assert told["votes"] == votes_before + i + 1
    assert seen_sides == {"a", "b"}  # the order is drawn per battle (a fixed side would be 2**-19)
    for start in range(0, 18, 6):  # every prompt once per round of draws, in a new order each round
        assert sorted(drawn_order[start : start + 6]) == list(range(6))

    read = read_votes(runs_dir / "arena" / "votes.jsonl")
    assert len(read.votes) == votes_before + 20 and not read.skipped
    last = read.votes[-1]
    assert last.prompt_index is None
    assert all(PROMPTS[v.prompt_index] == v.prompt[0].content for v in read.votes[votes_before:-1])
    assert last.prompt[0].role == "user" and last.a.settings["max_new_tokens"] == MAX_TOKENS
    assert last.a.settings == last.b.settings  # both sides decode alike, seed included

    result = prefkit("arena", "stats", str(runs_dir), "--json", "--bootstrap", "200")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    by_model = {m["model"]: m for m in figures["models"]}
    tutor = by_model["tutor"]
    assert tutor["rank"] == 1 and tutor["wins"] >= 1
    assert tutor["rating_interval"][0] <= tutor["rating"] <= tutor["rating_interval"][1]
    assert tutor["win_rate_interval"][0] <= tutor["win_rate"] <= tutor["win_rate_interval"][1]
    assert Path(figures["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    pairs = tmp_path / "pairs.jsonl"
    result = prefkit("arena", "export", str(runs_dir), "--output", str(pairs), "--json")
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)
    decisive = sum(v.decisive for v in read.votes)
    assert counts["written"] + len(counts["left_out"]["refused"]) == decisive
    assert counts["written"] + counts["left_out"]["ties"] + len(counts["left_out"]["refused"]) == len(
        read.votes
    )
    records = [json.loads(line) for line in pairs.read_text().splitlines()]
    assert len(records) == counts["written"] >= 1
    assert all(r["chosen"][0]["content"] == TUTOR_REPLY for r in records)  # what the voter preferred

    check = prefkit("data", "check", str(pairs))
    assert check.returncode == 0, check.stdout + check.stderr
    out = tmp_path / "round2"
    config = tmp_path / "round2.yaml"
    config.write_text(
        f"model_name_or_path: {tiny_model_dir}\ntrain_file: {pairs}\noutput_dir: {out}\nstage: dpo\n"
        "lora_rank: 4\nmax_steps: 1\nper_device_train_batch_size: 2\ncutoff_len: 64\nreport_to: none\n"
        "plot_loss: false\nsave_steps: 100\nlogging_steps: 1\n"
    )
    trained = prefkit("train", str(config))
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    first = next(m for m in metrics if "loss" in m)
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-4)  # DPO's first step, the pairs as read


def test_a_streamed_battle_sends_both_sides_then_done(server):
    events = stream_battle(server, {"prompt": "Is seven prime?", "max_tokens": MAX_TOKENS})
    head, rest = events[0], events[1:]
    assert set(head) == {"id", "prompt"} and head["prompt"] == [
        {"role": "user", "content": "Is seven prime?"}
    ]
    assert rest[-1] == "[DONE]"
    texts = {"a": "", "b": ""}
    finishes = {}
    for event in rest[:-1]:
        assert isinstance(event, dict) and "model" not in event
        if "text" in event:
            assert event["side"] not in finishes  # no text after a side's end
            texts[event["side"]] += event["text"]
        else:
            finishes[event["side"]] = event["finish_reason"]
    assert set(finishes) == {"a", "b"} and set(finishes.values()) <= {"stop", "length"}
    assert TUTOR_REPLY in texts.values()
    status, told = call(server, "POST", f"/ui/api/arena/battles/{head['id']}/vote", {"winner": "both_bad"})
    assert status == 200 and told["winner"] == "both_bad"
    vote = read_votes(Path(server_runs(server)) / "arena" / "votes.jsonl").votes[-1]
    assert vote.id == head["id"] and {vote.a.reply, vote.b.reply} == set(texts.values())


def server_runs(server) -> str:
    return server.args[server.args.index("--runs") + 1]


def test_votes_from_several_people_at_once_are_all_kept(server, runs_dir):
    before = len(read_votes(runs_dir / "arena" / "votes.jsonl").votes)

    def one(i: int) -> str:
        status, battle = call(server, "POST", "/ui/api/arena/battles", {"prompt": f"Hi {i}", "max_tokens": 4})
        assert status == 200, battle
        status, told = call(server, "POST", f"/ui/api/arena/battles/{battle['id']}/vote", {"winner": "tie"})
        assert status == 200, told
        return battle["id"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(one, range(8)))
    read = read_votes(runs_dir / "arena" / "votes.jsonl")
    assert len(read.votes) == before + 8 and not read.skipped
    assert {v.id for v in read.votes[before:]} == set(ids)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": [{"role": "assistant", "content": "hi"}]}, "messages"),
        ({"prompt": "hi", "max_tokens": 65}, "max_tokens"),
        ({"prompt": "hi", "temperature": 3}, "temperature"),
        ({}, "prompt"),
        ({"prompt": "hi", "prompt_index": len(PROMPTS)}, "prompt_index"),  # no such prompt
        ({"prompt": "hi", "prompt_index": -1}, "prompt_index"),
    ],
)
def test_a_bad_battle_request_is_a_400_naming_the_parameter(server, body, param):
    status, answer = call(server, "POST", "/ui/api/arena/battles", body)
    assert status == 400, answer
    assert answer["error"]["param"] == param, answer


def test_votes_are_one_per_finished_battle_and_need_the_key(server, runs_dir):
    status, answer = call(server, "GET", "/ui/api/arena", key=None)
    assert status == 401
    status, answer = call(server, "POST", "/ui/api/arena/battles/nope/vote", {"winner": "a"})
    assert status == 404 and answer["error"]["code"] == "battle_not_found"
    status, battle = call(server, "POST", "/ui/api/arena/battles", {"prompt": "Hello", "max_tokens": 4})
    assert status == 200
    vote = f"/ui/api/arena/battles/{battle['id']}/vote"
    status, answer = call(server, "POST", vote, {"winner": "c"})
    assert status == 400 and answer["error"]["param"] == "winner"
    for voter in ("x" * 101, "a\nb", "\u202eevil"):  # too long; a newline; a right-to-left override
        status, answer = call(server, "POST", vote, {"winner": "a", "voter": voter})
        assert status == 400 and answer["error"]["param"] == "voter", voter
    before = len(read_votes(runs_dir / "arena" / "votes.jsonl").votes)
    assert call(server, "POST", vote, {"winner": "a", "voter": "   "})[0] == 200
    assert read_votes(runs_dir / "arena" / "votes.jsonl").votes[-1].voter is None  # blank is no name
    status, answer = call(server, "POST", vote, {"winner": "b"})
    assert status == 409 and answer["error"]["code"] == "already_voted"
    assert len(read_votes(runs_dir / "arena" / "votes.jsonl").votes) == before + 1


def test_the_page_alone_shows_standings_but_opens_no_battle(runs_dir, server, tmp_path):
    # `prefkit ui` without a model reads the votes the server above wrote
    with ServerProcess(["--runs", str(runs_dir), "--log-level", "warning"], command="ui") as page:
        status, info = call(page, "GET", "/ui/api/arena", key=None)
        assert status == 200 and info["enabled"] is False and "no model" in info["reason"]
        assert info["votes"] >= 1
        status, figures = call(page, "GET", "/ui/api/arena/stats", key=None)
        assert status == 200 and {m["model"] for m in figures["models"]} == {"tiny", "tutor"}
        status, answer = call(page, "POST", "/ui/api/arena/battles", {"prompt": "hi"}, key=None)
        assert status == 409 and answer["error"]["code"] == "arena_disabled"


def test_a_votes_file_that_cannot_be_read_turns_the_arena_off_not_the_server(
    tiny_model_dir, tiny_adapters, tmp_path
):
    runs = tmp_path / "runs"
    (runs / "arena").mkdir(parents=True)
    (runs / "arena" / "votes.jsonl").write_text('{"id": "x", "winner": "a"}\n')  # whole JSON, not a vote
    args = [
        "--model", str(tiny_model_dir), "--dtype", "fp32", "--served-model-name", "tiny",
        "--adapter", f"a={tiny_adapters['a']}", "--ui", "--runs", str(runs), "--log-level", "warning",
    ]  # fmt: skip
    with ServerProcess(args, env={"PREFKIT_API_KEY": KEY, "OMP_NUM_THREADS": "1"}) as other:
        status, info = call(other, "GET", "/ui/api/arena")
        assert status == 200 and info["enabled"] is False
        assert "votes.jsonl:1: missing key 'prompt'" in info["reason"]
        status, answer = call(other, "POST", "/ui/api/arena/battles", {"prompt": "hi"})
        assert status == 409 and "cannot be read" in answer["error"]["message"]
        assert call(other, "GET", "/v1/models")[0] == 200  # the rest of the server serves
