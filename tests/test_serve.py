"""`prefkit serve`: a real server process on loopback with the tiny model and two adapters, driven by the
official `openai` client (plain and streaming, chat and completions) and by raw HTTP for the errors,
limits, disconnects and the abuse slice."""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import json
import socket
import time

import openai
import pytest
from scriptkit import load_script

from prefkit.data.examples import Message
from prefkit.infer.decode import Decoder, Request
from prefkit.infer.sampling import SamplingSettings
from prefkit.infer.stop import StopCondition, stop_condition
from prefkit.model.adapters import parse_adapters
from prefkit.model.inference import load_for_inference
from prefkit.model.loader import BASE_MODEL
from prefkit.serve.process import ServerProcess

KEY = "sk-test-" + "0123456789abcdef"
BASE = "tiny"
LONG = 400  # tokens: long enough that a request is still running while the test looks at it


@pytest.fixture(scope="module")
def server(tiny_model_dir, tiny_adapters, tmp_path_factory):
    args = [
        "--model", str(tiny_model_dir), "--served-model-name", BASE,
        "--adapter", f"a={tiny_adapters['a']}", "--adapter", f"b={tiny_adapters['b']}",
        "--dtype", "fp32", "--max-batch", "2", "--max-queue", "2", "--max-tokens", "512",
        "--header-timeout", "1", "--body-timeout", "1", "--max-body-bytes", "65536", "--log-level", "warning",
    ]  # fmt: skip
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with ServerProcess(args, log=log, env={"PREFKIT_API_KEY": KEY, "OMP_NUM_THREADS": "1"}) as process:
        yield process
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


@pytest.fixture(scope="module")
def loaded(tiny_model_dir, tiny_adapters):
    adapters = parse_adapters([f"a={tiny_adapters['a']}", f"b={tiny_adapters['b']}"])
    return load_for_inference(str(tiny_model_dir), adapters, dtype="fp32")


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60)


def _expected(loaded, adapter: str | None, ids: list[int], stop: StopCondition, max_new: int) -> str:
    """The reply the library gives (greedy), for comparison with what the server sends."""
    decoder = Decoder(loaded.model, loaded.tokenizer)
    seq = decoder.sequence(
        Request(ids, SamplingSettings(max_new_tokens=max_new), stop, adapter=adapter or BASE_MODEL)
    )
    decoder.add(seq)
    while decoder.has_work:
        decoder.step()
    return seq.text


def _raw(
    server, method: str, path: str, body: bytes | dict | None = None, key: str | None = KEY
) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    try:
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def _health(server) -> dict:
    return _raw(server, "GET", "/health", key=None)[1]


def _wait_for(server, running: int, waiting: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = _health(server)
        if health["running"] == running and health["waiting"] == waiting:
            return health
        time.sleep(0.01)
    raise AssertionError(f"the server did not get to {running} running, {waiting} waiting: {health}")


def _wait_idle(server, timeout: float = 60) -> dict:
    return _wait_for(server, 0, 0, timeout)


def _chat(model: str = BASE, content: str = "hello", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


@pytest.mark.slow
def test_models_lists_the_base_and_each_adapter(client, tiny_adapters):
    models = {m.id: m for m in client.models.list().data}
    assert set(models) == {BASE, "a", "b"}
    assert models["a"].model_extra["parent"] == BASE and models[BASE].model_extra["parent"] is None
    assert models["b"].model_extra["root"] == str(tiny_adapters["b"])


def test_chat_plain_and_streaming_for_each_model(client, loaded):
    messages = [Message("user", "What is data science?")]
    replies = {}
    for name in (BASE, "a", "b"):
        adapter = None if name == BASE else name
        ids = loaded.encoder(adapter).prompt_ids(messages)
        expected = _expected(loaded, adapter, ids, stop_condition(loaded.model, loaded.encoder(adapter)), 20)
        plain = client.chat.completions.create(
            model=name, messages=[m.to_dict() for m in messages], max_tokens=20, temperature=0
        )
        assert plain.choices[0].message.content == expected
        assert plain.model == name and plain.choices[0].finish_reason in ("stop", "length")
        assert plain.usage.prompt_tokens == len(ids) and plain.usage.completion_tokens >= 1
        assert plain.usage.total_tokens == plain.usage.prompt_tokens + plain.usage.completion_tokens

        chunks = list(
            client.chat.completions.create(
                model=name,
                messages=[m.to_dict() for m in messages],
                max_tokens=20,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert chunks[0].choices[0].delta.role == "assistant"
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == expected
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finishes == [plain.choices[0].finish_reason]
        assert (
            chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
        )
        replies[name] = expected
    assert len(set(replies.values())) == 3  # each name really picks a different model


def test_completions_plain_streaming_and_several_prompts(client, loaded):
    prompts = ["Once upon a time", "データサイエンス"]
    model_stop = stop_condition(loaded.model, loaded.encoder("b"))
    stop = StopCondition(model_stop.ids, ())
    expected = [_expected(loaded, "b", loaded.tokenizer(p)["input_ids"], stop, 12) for p in prompts]
    plain = client.completions.create(model="b", prompt=prompts, max_tokens=12, temperature=0)
    assert [c.text for c in sorted(plain.choices, key=lambda c: c.index)] == expected
    assert plain.usage.prompt_tokens == sum(len(loaded.tokenizer(p)["input_ids"]) for p in prompts)

    stream = client.completions.create(
        model="b", prompt=prompts[1], max_tokens=12, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in stream) == expected[1]
    short = client.completions.create(
        model="b", prompt=prompts[0], temperature=0, extra_body={"ignore_eos": True}
    )
    assert short.usage.completion_tokens == 16  # OpenAI's default max_tokens for completions


def test_sampling_with_a_seed_is_reproducible(client):
    kwargs = {"model": "a", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16}
    one = client.chat.completions.create(**kwargs, temperature=1.0, seed=3).choices[0].message.content
    two = client.chat.completions.create(**kwargs, temperature=1.0, seed=3).choices[0].message.content
    other = client.chat.completions.create(**kwargs, temperature=1.0, seed=4).choices[0].message.content
    assert one == two and one != other


def test_api_key_is_required_on_v1(server, client):
    assert _raw(server, "GET", "/health", key=None)[0] == 200  # open, for health checks
    for key in (None, "sk-wrong", KEY[:-1], KEY + "x"):
        status, body = _raw(server, "POST", "/v1/chat/completions", _chat(), key=key)
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert _raw(server, "GET", "/v1/models", key=None)[0] == 401
    wrong = openai.OpenAI(base_url=server.url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b'{"model": "tiny", "messages": [', 400, None),
        (b"[1, 2]", 400, None),
        (_chat(max_tokens="5"), 400, "max_tokens"),
        (_chat(temperature="hot"), 400, "temperature"),
        ({"model": BASE, "messages": "hello"}, 400, "messages"),
        ({"model": BASE, "messages": [{"role": "user", "content": 5}]}, 400, "messages.0.content"),
        ({"model": BASE, "messages": [{"role": "robot", "content": "x"}]}, 400, "messages.0.role"),
        ({"messages": [{"role": "user", "content": "x"}]}, 400, "model"),
        (_chat(model="nope"), 404, "model"),
        ({"model": BASE, "messages": []}, 400, "messages"),
        (_chat(max_tokens=0), 400, "max_tokens"),
        (_chat(max_tokens=-3), 400, "max_tokens"),
        (_chat(max_tokens=513), 400, "max_tokens"),
        (_chat(content="word " * 600), 400, "messages"),
        ({"model": BASE, "messages": None}, 400, "messages"),
        (_chat(n=2), 400, "n"),
        (_chat(stop=["a", "b", "c", "d", "e"]), 400, "stop"),
        (_chat(tools=[{"type": "function"}]), 400, "tools"),
        ({"model": BASE, "messages": [{"role": "assistant", "content": "x"}]}, 400, "messages"),
    ],
)
def test_bad_requests_are_4xx_with_an_openai_error(server, body, status, param):
    got, answer = _raw(server, "POST", "/v1/chat/completions", body)
    assert got == status, answer
    assert set(answer["error"]) == {"message", "type", "param", "code"} and answer["error"]["message"]
    assert answer["error"]["param"] == param


@pytest.mark.slow
def test_limits_on_length_body_and_method(server, loaded):
    ids = loaded.encoder().prompt_ids([Message("user", "hello")])
    too_long = 512 - len(ids) + 1  # prompt + max_tokens one over the context
    status, body = _raw(server, "POST", "/v1/chat/completions", _chat(max_tokens=too_long))
    assert status == 400 and body["error"]["code"] == "context_length_exceeded"
    assert _raw(server, "POST", "/v1/chat/completions", _chat(max_tokens=too_long - 1, stop=["x"]))[0] == 200
    assert _raw(server, "POST", "/v1/completions", {"model": BASE, "prompt": ""})[0] == 400
    assert (
        _raw(server, "POST", "/v1/completions", {"model": BASE, "prompt": ["x"] * 3})[0] == 400
    )  # > max_batch
    status, body = _raw(server, "POST", "/v1/chat/completions", b"{" + b" " * 70000 + b"}")
    assert status == 413 and body["error"]["type"] == "invalid_request_error"
    assert _raw(server, "GET", "/v1/chat/completions")[0] == 405
    assert _raw(server, "GET", "/v1/nothing")[0] == 404


def _start_long_stream(
    server, model: str = BASE
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    body = json.dumps(_chat(model, max_tokens=LONG, ignore_eos=True, stream=True)).encode()
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
    response = conn.getresponse()
    assert response.status == 200
    response.fp.readline()  # the first event: the request is queued
    return conn, response


def test_health_answers_while_generating_and_a_disconnect_stops_generation(server):
    _wait_idle(server)
    before = _health(server)
    conn, _ = _start_long_stream(server)
    _wait_for(server, running=1, waiting=0)
    slowest, saw_running = 0.0, False
    for _ in range(5):
        started = time.monotonic()
        health = _health(server)
        slowest = max(slowest, time.monotonic() - started)
        saw_running |= health["running"] == 1
    assert saw_running and slowest < 0.5
    conn.close()  # the client goes away mid-stream
    after = _wait_idle(server, timeout=10)
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["generated_tokens"] - before["generated_tokens"] < LONG  # it stopped early


@pytest.mark.slow
def test_a_full_queue_answers_429(server):
    _wait_idle(server)
    streams = [_start_long_stream(server) for _ in range(2)]  # both places of the batch
    # A stream's first event comes when it is queued; it holds a place once the scheduler admits it.
    _wait_for(server, running=2, waiting=0)
    waiting = concurrent.futures.ThreadPoolExecutor(4)
    queued = [
        waiting.submit(_raw, server, "POST", "/v1/chat/completions", _chat(max_tokens=LONG, ignore_eos=True))
        for _ in range(2)
    ]
    deadline = time.monotonic() + 60  # a loaded machine (CI) can take its time to queue them
    while _health(server)["waiting"] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _health(server)["waiting"] == 2, _health(server)  # the queue is full now
    status, body = _raw(server, "POST", "/v1/chat/completions", _chat(max_tokens=4))
    assert status == 429 and body["error"]["type"] == "rate_limit_error"
    for conn, _ in streams:
        conn.close()
    assert [f.result()[0] for f in queued] == [200, 200]  # the waiting ones are served, not dropped
    waiting.shutdown()
    _wait_idle(server)


@pytest.mark.slow
def test_a_stalled_client_is_cut_off(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        )  # half a head, then nothing
        started = time.monotonic()
        assert sock.recv(100) == b""
        assert time.monotonic() - started < 5
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
        head += "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        sock.sendall(head.encode() + b'{"model"')
        assert sock.recv(4096).startswith(b"HTTP/1.1 408")


@pytest.mark.slow
def test_abuse_slice(server):
    """A fast slice of scripts/serve_abuse.py: every kind of abuse, answered right, server still up."""
    abuse = load_script("scripts/serve_abuse.py")
    target = abuse.Target("127.0.0.1", server.port, KEY, BASE, 512, 65536, 1.0, 1.0)
    report = abuse.run_abuse(target, clients=16, requests=3, deadline=60, pid=server.pid)
    assert report["ok"], json.dumps(report, indent=2)
    assert set(report["outcomes"]) == {kind.__name__ for kind in abuse.ACCEPT}
    assert report["requests"] == 48 and report["health"]["polls"] > 0


def test_a_plain_request_whose_client_leaves_is_cancelled(server):
    before = _wait_idle(server)
    body = json.dumps(_chat(max_tokens=LONG, ignore_eos=True)).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(head.encode() + body)
    deadline = time.monotonic() + 10
    while _health(server)["running"] == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    sock.close()  # gone before the reply
    after = _wait_idle(server, timeout=10)
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["generated_tokens"] - before["generated_tokens"] < LONG


# -- one request's settings never reach its neighbours (issue 25) ---------------------------------------
def _send(server, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    """(status, JSON body) of a request sent with exactly these headers (http.client adds Host only when
    none is given)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request("POST" if body else "GET", path, body=body or None, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def _stream_text(server, body: dict) -> tuple[str, list[dict]]:
    """The text of a streamed chat reply, and any error events in it."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    try:
        conn.request(
            "POST", "/v1/chat/completions", body=json.dumps({**body, "stream": True}), headers=headers
        )
        response = conn.getresponse()
        assert response.status == 200
        text, errors = "", []
        for line in response.read().decode().splitlines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                errors.append(event["error"])
            else:
                text += event["choices"][0]["delta"].get("content") or ""
        return text, errors
    finally:
        conn.close()


def test_hostile_sampling_settings_are_refused_or_made_safe_and_never_touch_other_requests(server, loaded):
    """Bad settings sent while good requests decode: each bad one gets a 400 naming its field (or, for a
    temperature under 1e-5, a greedy reply); the good ones' replies are what they are alone, streamed
    ones end without an error event. (Before: the 1e-40 temperature made the sampler produce NaN and
    the scheduler failed every request in the batch with 500; seed 2**70 and lone surrogates were 500.)"""
    _wait_idle(server)
    question = [Message("user", "What is data science?")]
    stop = stop_condition(loaded.model, loaded.encoder())
    greedy = _expected(loaded, None, loaded.encoder().prompt_ids(question), stop, 40)
    good = _chat(content="What is data science?", max_tokens=40, temperature=0)
    before = _health(server)
    bad = {
        "repetition_penalty": _chat(temperature=1.0, repetition_penalty=1e-40, max_tokens=8),
        "seed": _chat(temperature=1.0, seed=2**70, max_tokens=8),
        "messages.0.content": b'{"model": "tiny", "messages": [{"role": "user", "content": "a\\ud800"}]}',
        "prompt.1": b'{"model": "tiny", "prompt": ["ok", "\\udfff"]}',
        "stop.0": _chat(stop=[chr(0xD800)], max_tokens=8),
    }
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        stream = pool.submit(_stream_text, server, good)
        # The stream admitted before the other two arrive: three waiting at once would fill the queue
        # (--max-queue 2) on a machine slow enough that the scheduler has not taken the first yet.
        deadline = time.monotonic() + 60
        while not stream.done() and _health(server)["running"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        plain = pool.submit(_raw, server, "POST", "/v1/chat/completions", good)
        tiny_temperature = pool.submit(
            _raw, server, "POST", "/v1/chat/completions", {**good, "temperature": 1e-40}
        )
        refused = {
            param: pool.submit(
                _raw,
                server,
                "POST",
                "/v1/completions" if param.startswith("prompt") else "/v1/chat/completions",
                b,
            )
            for param, b in bad.items()
        }
        for param, future in refused.items():
            status, body = future.result()
            assert status == 400 and body["error"]["param"] == param, (param, status, body)
        for future in (plain, tiny_temperature):
            status, body = future.result()
            assert status == 200 and body["choices"][0]["message"]["content"] == greedy, body
        assert stream.result() == (greedy, [])
    after = _wait_idle(server)
    assert after["failed"] == before["failed"] and after["completed"] == before["completed"] + 3
    status, body = _raw(
        server, "POST", "/v1/chat/completions", _chat(temperature=1.0, seed=2**64 - 1, max_tokens=4)
    )
    assert status == 200, body  # the largest seed torch takes is fine


def test_a_row_that_cannot_be_sampled_fails_alone(loaded):
    """Defence in depth behind the bounds: a row whose probabilities come out non-finite (here, settings
    forced past SamplingSettings' checks) ends with an error through the real scheduler, and its batch
    neighbour's reply is exactly what it is alone. (Before: multinomial raised, the whole step failed,
    and the scheduler failed every request in flight.)"""
    from prefkit.serve.scheduler import Scheduler

    stop = stop_condition(loaded.model, loaded.encoder())
    ids = loaded.encoder().prompt_ids([Message("user", "What is data science?")])
    alone = _expected(loaded, None, ids, stop, 30)
    poisoned = SamplingSettings(max_new_tokens=30, do_sample=True)
    object.__setattr__(poisoned, "temperature", 1e-40)  # what the old checks let through

    async def both() -> tuple[list, list]:
        scheduler = Scheduler(lambda: Decoder(loaded.model, loaded.tokenizer, max_batch=4), 8)
        scheduler.start()
        try:
            good, bad = asyncio.Queue(), asyncio.Queue()
            scheduler.submit(
                [
                    Request(ids, SamplingSettings(max_new_tokens=30), stop, BASE_MODEL),
                    Request(ids, SamplingSettings(max_new_tokens=30), stop, BASE_MODEL),
                ],
                good,
            )
            scheduler.submit([Request(ids, poisoned, stop, BASE_MODEL)], bad)
            events: tuple[list, list] = ([], [])
            for queue, out, count in ((bad, events[1], 1), (good, events[0], 2)):
                while sum(e.finished for e in out) < count:
                    out.append(await asyncio.wait_for(queue.get(), 60))
            assert scheduler.stats["failed"] == 1 and scheduler.stats["completed"] == 2
            return events
        finally:
            scheduler.stop()

    good_events, bad_events = asyncio.run(both())
    assert next(e.error for e in bad_events if e.finished).startswith("generation failed: ")
    for index in (0, 1):
        mine = [e for e in good_events if e.index == index]
        assert all(e.error is None for e in mine)
        assert "".join(e.text for e in mine) == alone


# -- browsers' pages are kept out --------------------------------------------------------------------------
def test_a_host_that_is_not_loopback_is_refused_on_every_route(server):
    """DNS rebinding: a page whose own name resolves to 127.0.0.1 still sends its name as Host."""
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    chat = json.dumps(_chat(max_tokens=2)).encode()
    completion = json.dumps({"model": BASE, "prompt": "x", "max_tokens": 2}).encode()
    routes = [("/health", b""), ("/v1/models", b""), ("/v1/chat/completions", chat)]
    routes += [("/v1/completions", completion), ("/nothing", b"")]
    hostile = ("attacker.example", "attacker.example:8000", "127.0.0.1.attacker.example", "localhost.evil.")
    for host in (*hostile, ""):
        for path, body in routes:
            status, answer = _send(server, path, body, {**auth, "Host": host})
            assert status == 421, (host, path, status)
            assert answer["error"]["code"] == "host_not_allowed"
    for host in (
        "localhost",
        f"localhost:{server.port}",
        "localhost.",  # localhost's fully qualified name: only a page on this machine has it
        f"127.0.0.1:{server.port}",
        "[::1]",
        f"[::1]:{server.port}",
    ):
        assert _send(server, "/v1/chat/completions", chat, {**auth, "Host": host})[0] == 200, host
        assert _send(server, "/health", b"", {"Host": host})[0] == 200, host


def test_v1_takes_only_json_bodies(server):
    """A page may POST text/plain, a form or an untyped body anywhere without a CORS preflight; it cannot
    send application/json that way."""
    chat = json.dumps(_chat(max_tokens=2)).encode()
    auth = {"Authorization": f"Bearer {KEY}"}
    for content_type in ("text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                         "multipart/form-data; boundary=x", "application/jsonx", None):  # fmt: skip
        headers = {**auth, **({"Content-Type": content_type} if content_type else {})}
        for path in ("/v1/chat/completions", "/v1/completions"):
            status, body = _send(server, path, chat, headers)
            assert status == 415, (content_type, path, status)
            assert set(body["error"]) == {"message", "type", "param", "code"}
            assert body["error"]["param"] == "Content-Type" and "application/json" in body["error"]["message"]
    plain = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
    with pytest.raises(openai.APIStatusError) as raised:
        plain.chat.completions.create(
            model=BASE,
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"Content-Type": "text/plain"},
        )
    assert raised.value.status_code == 415
    json_utf8 = {**auth, "Content-Type": "Application/JSON; charset=utf-8"}
    assert _send(server, "/v1/chat/completions", chat, json_utf8)[0] == 200


def test_a_request_without_a_host_header_is_no_browser_and_is_answered():
    """Browsers always send Host; HTTP/1.0 probes may not. An empty Host is still refused."""
    from prefkit.web.guard import host_allow_list, host_allowed

    loopback_only = host_allow_list("127.0.0.1")
    assert host_allowed(None, loopback_only)
    assert not host_allowed("", loopback_only)
    assert not host_allowed("attacker.example", loopback_only)
    assert host_allowed("LOCALHOST:8000", loopback_only) and host_allowed("[::1]:80", loopback_only)


def test_allowed_host_names_match_with_or_without_the_trailing_dot_and_wildcards_are_refused():
    from prefkit.web.guard import host_allow_list, host_allowed

    listed = host_allow_list("127.0.0.1", ["models.example.com."])
    assert host_allowed("models.example.com", listed) and host_allowed("Models.Example.com.:8000", listed)
    assert host_allowed("localhost.:8000", listed)  # localhost's fully qualified name
    assert not host_allowed("evil.example", listed) and not host_allowed("models.example.com.evil", listed)
    from prefkit.errors import PrefkitError

    with pytest.raises(PrefkitError, match="wildcard"):
        host_allow_list("127.0.0.1", ["*.example.com"])
