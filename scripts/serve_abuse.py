"""A bounded load-and-abuse run against `prefkit serve` on loopback.

    python scripts/serve_abuse.py [--model smollm2-135m-instruct] [--clients 100] [--requests 10]
    python scripts/serve_abuse.py --url http://127.0.0.1:8000 --api-key KEY [--pid PID]

``--clients`` threads at once, each sending ``--requests`` requests, cycling through these kinds: valid
chat and completions (plain, streamed, and streamed then dropped after the first chunk), malformed
JSON, wrong types, huge ``max_tokens``, a prompt over the context, a body over the size limit, a
missing and a wrong API key, an unknown model, a wrong method, a foreign ``Host`` (DNS rebinding), a
``text/plain`` body (a browser's simple request), sampling settings that used to break the whole batch
(seed 2**70, repetition_penalty 1e-40, lone surrogates; a temperature of 1e-40, now greedy), and
clients that connect and stall (half a request head; a body that never finishes). Meanwhile
``/health`` is polled and the server's memory (its RSS, from /proc) is sampled.

Every answer must be the status its kind calls for (valid requests: 200, or 429 when the queue is
full; a stalled head: the server closes the connection; a stalled body: 408); anything else -- a 500,
a refused connection, a hang -- is a failure. After the run the server must still answer ``/health``
and a valid request. Without ``--url`` the script starts its own server (and stops it); it only ever
talks to loopback addresses, and stops by itself (``--deadline`` seconds at most).

Writes a JSON report (``--output``) and exits 1 if anything failed.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import secrets
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HEALTH_SLOW = 2.0  # seconds: /health slower than this while under load is a failure


@dataclass
class Target:
    host: str
    port: int
    api_key: str
    model: str
    context: int  # max_model_len, to build a prompt over it
    max_body: int
    header_timeout: float
    body_timeout: float


def _connection(target: Target, timeout: float = 120.0) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(target.host, target.port, timeout=timeout)


def _post(
    target: Target,
    path: str,
    body: bytes,
    *,
    key: str | None = "valid",
    method: str = "POST",
    extra: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json", **(extra or {})}
    if key is not None:
        headers["Authorization"] = f"Bearer {target.api_key if key == 'valid' else key}"
    conn = _connection(target)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _chat(target: Target, content: str = "Say hello.", **extra: Any) -> bytes:
    body = {"model": target.model, "messages": [{"role": "user", "content": content}], "max_tokens": 8}
    return json.dumps({**body, **extra}).encode()


# -- the kinds of request: each returns the outcome (a status, or a word) ------------------------------
def valid_chat(t: Target) -> str:
    return str(_post(t, "/v1/chat/completions", _chat(t))[0])


def valid_completion(t: Target) -> str:
    body = json.dumps({"model": t.model, "prompt": "Once upon a time", "max_tokens": 8}).encode()
    return str(_post(t, "/v1/completions", body)[0])


def valid_stream(t: Target) -> str:
    status, data = _post(t, "/v1/chat/completions", _chat(t, stream=True))
    if status == 200 and not data.rstrip().endswith(b"data: [DONE]"):
        return "stream-incomplete"
    return str(status)


def dropped_stream(t: Target) -> str:
    conn = _connection(t)
    try:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {t.api_key}"}
        conn.request(
            "POST", "/v1/chat/completions", body=_chat(t, stream=True, max_tokens=64), headers=headers
        )
        response = conn.getresponse()
        if response.status == 200:
            response.fp.readline()  # the first event, then hang up mid-stream
        return str(response.status)
    finally:
        conn.close()


def malformed_json(t: Target) -> str:
    return str(_post(t, "/v1/chat/completions", b'{"model": "x", "messages": [')[0])


def wrong_types(t: Target) -> str:
    bodies = [
        {"model": t.model, "messages": "hello"},
        {"model": t.model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": "5"},
        {"model": 5, "messages": [{"role": "user", "content": "hi"}]},
        {"model": t.model, "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"},
        {"model": t.model, "messages": []},
        {"model": t.model, "prompt": {"text": "x"}},
    ]
    statuses = {str(_post(t, "/v1/chat/completions", json.dumps(b).encode())[0]) for b in bodies}
    return statuses.pop() if len(statuses) == 1 else "/".join(sorted(statuses))


def huge_max_tokens(t: Target) -> str:
    return str(_post(t, "/v1/chat/completions", _chat(t, max_tokens=10**9))[0])


def oversized_prompt(t: Target) -> str:
    return str(_post(t, "/v1/chat/completions", _chat(t, content="word " * (t.context + 16)))[0])


def oversized_body(t: Target) -> str:
    try:
        return str(_post(t, "/v1/chat/completions", b" " * (t.max_body + 1024))[0])
    except (BrokenPipeError, ConnectionResetError):
        return "reset-after-413"  # the server answered 413 and closed while the body was still being sent


def missing_key(t: Target) -> str:
    return str(_post(t, "/v1/chat/completions", _chat(t), key=None)[0])


def wrong_key(t: Target) -> str:
    return str(_post(t, "/v1/chat/completions", _chat(t), key="sk-" + secrets.token_hex(8))[0])


def unknown_model(t: Target) -> str:
    body = json.dumps({"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}).encode()
    return str(_post(t, "/v1/chat/completions", body)[0])


def wrong_method(t: Target) -> str:
    return str(_post(t, "/v1/chat/completions", b"", method="GET")[0])


def foreign_host(t: Target) -> str:
    return str(_post(t, "/v1/chat/completions", _chat(t), extra={"Host": "attacker.example"})[0])


def text_plain_body(t: Target) -> str:
    return str(_post(t, "/v1/chat/completions", _chat(t), extra={"Content-Type": "text/plain"})[0])


def hostile_settings(t: Target) -> str:
    """Settings that once made the sampler produce NaN (failing every request in the batch) or overflowed
    in the handler (a 500): each must be a 400 now."""
    bodies = [
        _chat(t, temperature=1.0, seed=2**70),
        _chat(t, temperature=1.0, repetition_penalty=1e-40),
        _chat(t, content=chr(0xD800)),  # json.dumps writes the escape \ud800: a lone surrogate
    ]
    statuses = {str(_post(t, "/v1/chat/completions", b)[0]) for b in bodies}
    return statuses.pop() if len(statuses) == 1 else "/".join(sorted(statuses))


def tiny_temperature(t: Target) -> str:
    return str(_post(t, "/v1/chat/completions", _chat(t, temperature=1e-40))[0])  # greedy


def stalled_head(t: Target) -> str:
    """Half a request head, then nothing: the server must close the connection itself."""
    with socket.create_connection((t.host, t.port), timeout=t.header_timeout + 10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        try:
            closed = sock.recv(1024) == b""
        except TimeoutError:
            return "not-closed"
        except ConnectionResetError:
            closed = True
        waited = time.monotonic() - started
        return "closed" if closed and waited <= t.header_timeout + 5 else "not-closed"


def stalled_body(t: Target) -> str:
    """A body that never finishes: the server must answer 408 after its body timeout."""
    with socket.create_connection((t.host, t.port), timeout=t.body_timeout + 15) as sock:
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {t.api_key}\r\nContent-Length: 1000\r\n\r\n"
        )
        sock.sendall(head.encode() + b'{"model": ')
        try:
            answer = sock.recv(4096)
        except TimeoutError:
            return "no-answer"
        return answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/1.1 ") else "closed-silently"


ACCEPT: dict[Callable[[Target], str], set[str]] = {
    valid_chat: {"200", "429"},
    valid_completion: {"200", "429"},
    valid_stream: {"200", "429"},
    dropped_stream: {"200", "429"},
    malformed_json: {"400"},
    wrong_types: {"400"},
    huge_max_tokens: {"400"},
    oversized_prompt: {"400"},
    oversized_body: {"413", "reset-after-413"},
    missing_key: {"401"},
    wrong_key: {"401"},
    unknown_model: {"404"},
    wrong_method: {"405"},
    foreign_host: {"421"},
    text_plain_body: {"415"},
    hostile_settings: {"400"},
    tiny_temperature: {"200", "429"},
    stalled_head: {"closed"},
    stalled_body: {"408"},
}


@dataclass
class Tally:
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, outcome: str, ok: bool) -> None:
        with self.lock:
            self.outcomes.setdefault(kind, Counter())[outcome] += 1
            if not ok and len(self.failures) < 50:
                self.failures.append(f"{kind}: {outcome}")


def _rss_mib(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _health(t: Target) -> tuple[int, float, dict]:
    started = time.monotonic()
    conn = _connection(t, timeout=10)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        body = json.loads(response.read() or b"{}")
        return response.status, time.monotonic() - started, body
    finally:
        conn.close()


def run_abuse(
    target: Target, *, clients: int, requests: int, deadline: float, pid: int | None = None
) -> dict[str, Any]:
    """The run itself (see the module docstring); the report, with ``ok`` saying whether all held."""
    kinds = list(ACCEPT)
    tally = Tally()
    stop_at = time.monotonic() + deadline
    done = threading.Event()
    health: dict[str, Any] = {"polls": 0, "slowest": 0.0, "bad": 0}
    memory: list[float] = []
    baseline = _rss_mib(pid)

    def client(index: int) -> None:
        for r in range(requests):
            if time.monotonic() > stop_at:
                return
            kind = kinds[(index + r * 7) % len(kinds)]
            try:
                outcome = kind(target)
            except Exception as err:  # a refused connection or a timeout is a finding, not a crash
                outcome = f"error: {type(err).__name__}: {err}"[:120]
            tally.record(kind.__name__, outcome, outcome in ACCEPT[kind])

    def monitor() -> None:
        while not done.is_set():
            try:
                status, seconds, _ = _health(target)
                health["polls"] += 1
                health["slowest"] = max(health["slowest"], seconds)
                if status != 200 or seconds > HEALTH_SLOW:
                    health["bad"] += 1
            except Exception:
                health["bad"] += 1
            if (rss := _rss_mib(pid)) is not None:
                memory.append(rss)
            done.wait(0.5)

    started = time.monotonic()
    watcher = threading.Thread(target=monitor, daemon=True)
    watcher.start()
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, stop_at - time.monotonic()) + 60)
    hung = sum(t.is_alive() for t in threads)
    done.set()
    watcher.join(5)
    seconds = time.monotonic() - started

    status, _, after = _health(target)
    try:
        survivor = valid_chat(target)
    except Exception as err:
        survivor = f"error: {err}"
    requests_sent = sum(sum(c.values()) for c in tally.outcomes.values())
    report = {
        "clients": clients,
        "requests": requests_sent,
        "seconds": round(seconds, 1),
        "outcomes": {kind: dict(c) for kind, c in sorted(tally.outcomes.items())},
        "failures": tally.failures,
        "clients_still_hanging": hung,
        "health": {
            "polls": health["polls"],
            "slowest_seconds": round(health["slowest"], 3),
            "bad": health["bad"],
        },
        # The server's RSS before, at each quarter of the run, and its peak: bounded memory levels off
        # once the KV cache and the allocator have grown to what the limits allow.
        "memory_mib": {
            "before": round(baseline, 1) if baseline else None,
            "quarters": [round(memory[min(len(memory) - 1, len(memory) * q // 4)], 1) for q in (1, 2, 3, 4)]
            if memory
            else None,
            "peak": round(max(memory), 1) if memory else None,
        },
        "after": {"health_status": status, "valid_request": survivor, "server_counters": after},
    }
    report["ok"] = (
        not tally.failures and not hung and health["bad"] == 0 and status == 200 and survivor == "200"
    )
    return report


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _rounds(target: Target, args: argparse.Namespace, pid: int | None) -> dict[str, Any]:
    """``--rounds`` runs against the same server: memory that levels off shows in the later rounds."""
    rounds = [
        run_abuse(target, clients=args.clients, requests=args.requests, deadline=args.deadline, pid=pid)
        for _ in range(args.rounds)
    ]
    return rounds[0] if len(rounds) == 1 else {"rounds": rounds, "ok": all(r["ok"] for r in rounds)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model to serve (without --url)")
    parser.add_argument("--url", help="an already running server on loopback (default: start one)")
    parser.add_argument("--api-key", help="its API key (with --url)")
    parser.add_argument("--served-model", default="abuse", help="the model name to request (with --url)")
    parser.add_argument("--pid", type=int, help="the server's process id, to sample its memory (with --url)")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--requests", type=int, default=10, help="requests per client")
    parser.add_argument("--deadline", type=float, default=300, help="seconds after which clients stop")
    parser.add_argument("--rounds", type=int, default=1, help="runs in a row against the same server")
    parser.add_argument("--context", type=int, default=1024, help="--max-model-len of the server")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path(__file__).parent.parent / "benchmarks" / "results" / "serve_abuse.json",
    )
    args = parser.parse_args()

    from prefkit.serve.limits import ServeLimits
    from prefkit.serve.process import ServerProcess

    limits = ServeLimits()
    if args.url:
        parts = urlsplit(args.url)
        if not _loopback(parts.hostname or ""):
            parser.error("--url must be a loopback address (127.0.0.0/8, ::1, localhost)")
        target = Target(
            parts.hostname or "127.0.0.1",
            parts.port or 80,
            args.api_key or "",
            args.served_model,
            args.context,
            limits.max_body_bytes,
            limits.header_timeout,
            limits.body_timeout,
        )
        report = _rounds(target, args, args.pid)
    else:
        key = "sk-abuse-" + secrets.token_hex(16)
        server_args = [
            "--model",
            args.model,
            "--served-model-name",
            "abuse",
            "--max-model-len",
            str(args.context),
            "--max-tokens",
            "64",
            "--max-queue",
            "32",
            "--header-timeout",
            "5",
            "--body-timeout",
            "5",
            "--log-level",
            "warning",
        ]
        with ServerProcess(server_args, env={"PREFKIT_API_KEY": key}) as server:
            target = Target(
                "127.0.0.1", server.port or 0, key, "abuse", args.context, limits.max_body_bytes, 5, 5
            )
            report = _rounds(target, args, server.pid)
            report["server"] = {"command": "prefkit serve " + " ".join(server_args)}
    report["command"] = "python scripts/serve_abuse.py " + " ".join(sys.argv[1:])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
