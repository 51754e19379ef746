"""The pairwise judge through the real `openai` client against a real HTTP server on 127.0.0.1.

Until `prefkit serve` lands, the server is a tiny FastAPI app defined here that answers
deterministically from the request: it prefers the reply that ends with a question mark, and when
neither or both do it answers "A" -- a judge with a pure position bias, which asking both orders must
turn into a tie."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from fastapi import FastAPI

from prefkit.evaluate.judge import JudgeError, JudgeSettings, judge_pairs, parse_verdict


def _app(requests: list[dict]) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    def complete(body: dict) -> dict:
        requests.append(body)
        text = body["messages"][-1]["content"]
        a, b = re.search(r"Reply A:\n(.*)\n\nReply B:\n(.*)\n\nBetter", text, re.S).groups()
        asks_a, asks_b = a.rstrip().endswith("?"), b.rstrip().endswith("?")
        verdict = "B" if asks_b and not asks_a else "A"
        return {
            "id": "judge-1",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": verdict}, "finish_reason": "stop"}
            ],
        }

    return app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def judge_server() -> Iterator[tuple[str, list[dict]]]:
    requests: list[dict] = []
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(_app(requests), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "judge server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1", requests
    server.should_exit = True
    thread.join(timeout=10)


def test_judge_asks_both_orders_and_cancels_position_bias(judge_server):
    url, requests = judge_server
    prompts = ["What is a stack?", "What is a queue?", "What is a heap?"]
    baseline = ["A stack is LIFO.", "Which comes out first?", "A heap is a tree."]
    model = ["Which item comes out first?", "A queue is FIFO.", "A heap is a kind of tree."]
    summary, verdicts = judge_pairs(prompts, baseline, model, JudgeSettings(url=url, model="judge-x"))

    assert [v["winner"] for v in verdicts] == ["model", "baseline", "tie"]
    assert [v["consistent"] for v in verdicts] == [True, True, False]  # the third: "A" both times
    assert summary == {
        "judge/win_rate": pytest.approx((1 + 0.5) / 3),
        "judge/wins": 1.0,
        "judge/losses": 1.0,
        "judge/ties": 1.0,
        "judge/position_consistency": pytest.approx(2 / 3),
    }
    assert len(requests) == 6 and {r["model"] for r in requests} == {"judge-x"}
    assert all(r["temperature"] == 0 for r in requests)
    first, second = requests[0]["messages"][-1]["content"], requests[1]["messages"][-1]["content"]
    assert first.index("A stack is LIFO.") < first.index("Which item comes out first?")  # baseline as A
    assert second.index("Which item comes out first?") < second.index("A stack is LIFO.")  # then as B


def test_judge_unreachable_is_a_clear_error():
    settings = JudgeSettings(url=f"http://127.0.0.1:{_free_port()}/v1", model="m", timeout=2)
    with pytest.raises(JudgeError, match=r"the judge at http://127\.0\.0\.1"):
        judge_pairs(["q"], ["a"], ["b"], settings)


def test_parse_verdict():
    assert parse_verdict("A") == "A" and parse_verdict(" b.") == "B"
    assert parse_verdict("Reply B is better") == "B"
    assert parse_verdict("neither") is None and parse_verdict(None) is None
