"""The web page's server side: a real `prefkit ui` process (no model) over a runs directory holding real
tiny runs in every state, driven over raw HTTP -- run statuses, incremental metrics, path safety, the API
key, the security headers, evaluations, comparisons, and broken files that must never give a 500."""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from uikit import train_run, write_eval

from prefkit.serve.process import ServerProcess
from prefkit.ui.metrics import BadCursor, read_since
from prefkit.ui.runs import STALE_AFTER, folder_id, run_status

KEY = "sk-ui-test-" + "0123456789"
STATIC = Path(__file__).parents[1] / "src" / "prefkit" / "ui" / "static"


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory) -> Path:
    """One real finished run (sigmoid, 10 steps)."""
    return train_run(tmp_path_factory.mktemp("trained"), "run", tiny_model_dir)


def _age(folder: Path, seconds: float) -> None:
    old = time.time() - seconds
    for path in [folder, *folder.rglob("*")]:
        os.utime(path, (old, old), follow_symlinks=False)


@pytest.fixture(scope="module")
def runs_dir(trained, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    shutil.copytree(trained, root / "finished")
    # prefkit 0.1.0 writes the marker only at the end: a run in progress has none.
    shutil.copytree(trained, root / "main-format-running")
    (root / "main-format-running" / "prefkit_run.json").unlink()
    # A marker that says running (as prefkit writes from the start), but nothing written for an hour.
    shutil.copytree(trained, root / "stopped")
    marker = {
        "status": "running",
        "files": ["metrics.jsonl", "training_config.json"],
        "prefkit_version": "0.2",
    }
    (root / "stopped" / "prefkit_run.json").write_text(json.dumps(marker))
    _age(root / "stopped", 3600)
    shutil.copytree(trained, root / "deep" / "er" / "nested")
    broken = root / "broken"
    broken.mkdir()
    (broken / "prefkit_run.json").write_text("{not json")
    (broken / "training_config.json").write_text("[1, 2")
    (broken / "metrics.jsonl").write_bytes(
        b'{"step": 1, "loss": NaN}\n\xff\xfe garbage\n[1, 2]\n{"step": 2, "loss": Infinity}\n{"step": 3, "lo'
    )
    odd = root / "odd-types"  # valid JSON, every field the wrong type
    odd.mkdir()
    (odd / "prefkit_run.json").write_text(json.dumps({"status": ["finished"], "global_step": "many"}))
    (odd / "training_config.json").write_text(
        json.dumps(
            {"stage": ["dpo"], "config": {"max_steps": "ten", "logging_steps": {}, "learning_rate": []}}
        )
    )
    (odd / "metrics.jsonl").write_text('{"step": "one", "loss": "low"}\n{"step": true}\n')
    (root / ".hidden" / "run").mkdir(parents=True)
    (root / ".hidden" / "run" / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    # Links that lead out of the runs directory: a folder, and a run's metrics file.
    outside = tmp_path_factory.mktemp("outside")
    shutil.copytree(trained, outside / "secret-run")
    (outside / "secret.txt").write_text("SECRET-CONTENT\n")
    (root / "linked-run").symlink_to(outside / "secret-run", target_is_directory=True)
    leaky = root / "leaky"
    leaky.mkdir()
    (leaky / "training_config.json").symlink_to(outside / "secret.txt")
    (leaky / "metrics.jsonl").symlink_to(outside / "secret.txt")
    # Evaluations: one inside a run, one elsewhere naming a run as its adapter, one of no run here.
    write_eval(root / "finished" / "eval-inside", root / "finished")
    write_eval(root / "evals" / "named", root / "finished")
    write_eval(root / "evals" / "loose", Path("/somewhere/else"))
    return root


@pytest.fixture(scope="module")
def server(runs_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("ui-server") / "server.log"
    args = ["--runs", str(runs_dir), "--log-level", "warning"]
    with ServerProcess(args, log=log, env={"PREFKIT_API_KEY": KEY}, command="ui") as process:
        yield process
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def _no_constants(name: str):
    raise ValueError(f"{name} in a JSON answer: a browser's JSON.parse rejects it")


def get(server, path: str, key: str | None = KEY) -> tuple[int, dict, str]:
    """(status, headers, body) of a GET sent with ``path`` exactly as given (no normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {key}"} if key else {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode()
    finally:
        conn.close()


def get_json(server, path: str, key: str | None = KEY) -> tuple[int, dict]:
    status, _, body = get(server, path, key)
    return status, json.loads(body, parse_constant=_no_constants)


def runs_by_name(server) -> dict[str, dict]:
    status, body = get_json(server, "/ui/api/runs")
    assert status == 200
    return {r["name"]: r for r in body["runs"]}


@pytest.mark.slow
def test_the_runs_list_finds_every_run_with_its_status(server):
    runs = runs_by_name(server)
    assert set(runs) == {
        "finished", "main-format-running", "stopped", "deep/er/nested", "broken", "leaky", "odd-types"
    }  # fmt: skip
    assert runs["finished"]["status"] == "finished"
    assert runs["main-format-running"]["status"] == "running"
    assert runs["stopped"]["status"] == "interrupted"
    assert "resume" in runs["stopped"]["status_detail"] and "1 h" in runs["stopped"]["status_detail"]
    assert runs["broken"]["status"] == "unknown" and "not valid JSON" in runs["broken"]["status_detail"]
    done = runs["finished"]
    assert (done["stage"], done["method"], done["step"], done["max_steps"]) == ("dpo", "sigmoid", 10, 10)
    assert done["model"].endswith("model")
    assert done["settings"]["learning_rate"] == 5e-3 and done["settings"]["pref_beta"] == 0.1
    assert "num_train_epochs" not in done["settings"]  # max_steps decides the length
    assert set(done["latest"]) >= {"loss", "rewards/margins", "rewards/accuracies"}
    assert done["id"] == folder_id("run", "finished")


def test_status_goes_interrupted_after_a_quiet_spell_scaled_by_the_runs_pace():
    now = 10_000.0
    running = {"status": "running", "files": []}
    assert run_status(running, None, now - 60, 5.0, now)[0] == "running"
    assert run_status(running, None, now - STALE_AFTER - 1, 5.0, now)[0] == "interrupted"
    # A run that logs every 100 s is not called interrupted after 6 quiet minutes.
    assert run_status(running, None, now - 400, 100.0, now)[0] == "running"
    assert run_status(None, None, now - 400, 100.0, now)[0] == "running"  # prefkit 0.1.0: no marker yet
    assert run_status({"status": "finished"}, None, now - 1e6, None, now)[0] == "finished"
    assert run_status({"status": "exploded"}, None, now, None, now)[0] == "unknown"


def test_metrics_arrive_incrementally_and_a_line_being_written_waits(server, runs_dir, trained):
    run_id = folder_id("run", "finished")
    status, first = get_json(server, f"/ui/api/runs/{run_id}/metrics")
    assert status == 200 and not first["reset"] and not first["more"]
    steps = [r["step"] for r in first["records"] if "loss" in r]
    assert steps == list(range(1, 11))
    assert first["records"] == [
        json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()
    ]
    status, again = get_json(server, f"/ui/api/runs/{run_id}/metrics?since={first['cursor']}")
    assert again["records"] == [] and again["cursor"] == first["cursor"]

    path = runs_dir / "finished" / "metrics.jsonl"
    original = path.read_bytes()
    try:
        with path.open("ab") as f:  # what the trainer does: one record per line, appended
            f.write(b'{"step": 11, "loss": 0.5')
        _, partial = get_json(server, f"/ui/api/runs/{run_id}/metrics?since={first['cursor']}")
        assert partial["records"] == []  # half a record is not shown, nor called broken
        with path.open("ab") as f:
            f.write(b', "rewards/margins": 1.5}\n')
        _, whole = get_json(server, f"/ui/api/runs/{run_id}/metrics?since={partial['cursor']}")
        assert whole["records"] == [{"step": 11, "loss": 0.5, "rewards/margins": 1.5}] and not whole["reset"]
        # A resumed run rewrites the file without the records after its checkpoint: the client starts over.
        tmp = path.with_name(".metrics.jsonl.tmp")
        tmp.write_bytes(b"".join(original.splitlines(keepends=True)[:5]))
        os.replace(tmp, path)
        _, replaced = get_json(server, f"/ui/api/runs/{run_id}/metrics?since={whole['cursor']}")
        assert replaced["reset"] and [r["step"] for r in replaced["records"]] == [1, 2, 3, 4, 5]
    finally:
        path.write_bytes(original)


def test_broken_files_are_named_and_never_a_500(server):
    run_id = folder_id("run", "broken")
    status, metrics = get_json(server, f"/ui/api/runs/{run_id}/metrics")  # NaN and Infinity become null
    assert status == 200
    assert metrics["records"] == [{"step": 1, "loss": None}, {"step": 2, "loss": None}]
    assert metrics["problems"] == [
        "metrics.jsonl:2: not a JSON record; left out",
        "metrics.jsonl:3: a JSON list, not a record; left out",
    ]
    status, config = get_json(server, f"/ui/api/runs/{run_id}/config")
    assert status == 200 and config["record"] is None
    assert any("training_config.json: not valid JSON" in p for p in config["problems"])
    status, detail = get_json(server, f"/ui/api/runs/{run_id}")
    assert status == 200 and detail["status"] == "unknown" and detail["step"] == 2
    odd = folder_id("run", "odd-types")
    for path in ("", "/metrics", "/config", "/evals"):
        assert get_json(server, f"/ui/api/runs/{odd}{path}")[0] == 200, path
    detail = get_json(server, f"/ui/api/runs/{odd}")[1]
    assert (detail["status"], detail["step"], detail["max_steps"]) == ("unknown", None, None)


def test_nothing_outside_the_runs_directory_is_read(server):
    runs = runs_by_name(server)
    assert "linked-run" not in runs  # a symlinked folder is not entered
    leaky = runs["leaky"]
    assert any("outside the runs directory" in p for p in leaky["problems"])
    for path in (f"/ui/api/runs/{leaky['id']}/metrics", f"/ui/api/runs/{leaky['id']}/config"):
        status, _, body = get(server, path)
        assert status == 200 and "SECRET" not in body
    for path in (
        "/ui/api/runs/..",
        "/ui/api/runs/../../etc/passwd",
        "/ui/api/runs/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/ui/api/runs/..%2f..%2fetc%2fpasswd/metrics",
        "/ui/api/runs/%2Fetc%2Fpasswd/config",
        "/ui/api/runs//etc/passwd",
        "/ui/api/runs/linked-run/metrics",
        f"/ui/api/runs/{folder_id('run', 'linked-run')}/metrics",
        "/ui/api/evals/..%2f..%2fetc%2fpasswd",
        "/ui/static/..%2f..%2f__init__.py",
        "/ui/static/../runs.py",
    ):
        status, _, body = get(server, path)
        assert status == 404, (path, status, body[:200])
        assert "root:" not in body and "SECRET" not in body and "import" not in body


def test_the_api_needs_the_key_and_the_page_does_not(server):
    assert get(server, "/ui/api/runs", key=None)[0] == 401
    status, headers, body = get(server, "/ui/api/runs", key="sk-wrong")
    assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
    assert headers["www-authenticate"] == "Bearer"
    status, headers, page = get(server, "/", key=None)
    assert status == 200 and headers["content-type"].startswith("text/html")
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"
    for name in re.findall(r'(?:src|href)="ui/static/([^"]+)"', page):
        status, headers, _ = get(server, f"/ui/static/{name}", key=None)
        assert status == 200 and "content-security-policy" in headers, name
    status, headers, _ = get(server, "/ui/static/app.js", key=None)
    assert headers["content-type"].startswith("text/javascript")
    assert get_json(server, "/ui/api/info") == (200, {"chat": False, "runs_dir": "runs0"})


def test_evaluations_belong_to_their_runs(server):
    runs = runs_by_name(server)
    attached = {e["name"] for e in runs["finished"]["evals"]}
    assert attached == {"finished/eval-inside", "evals/named"}  # inside it, and naming it as the adapter
    _, listing = get_json(server, "/ui/api/runs")
    assert [e["name"] for e in listing["evals"]] == ["evals/loose"]
    status, evals = get_json(server, f"/ui/api/runs/{runs['finished']['id']}/evals")
    assert status == 200 and len(evals["evals"]) == 2
    one = evals["evals"][0]
    assert one["report"]["model"]["preference"] == {"accuracy": 0.875, "margin": None}  # NaN: null
    assert one["markdown"].startswith("# prefkit eval: tiny + ") and "<script>" in one["markdown"]
    assert [s["reply"] for s in one["samples"]] == ["<b>Yes</b>"] and one["problems"] == []
    status, loose = get_json(server, f"/ui/api/evals/{listing['evals'][0]['id']}")
    assert status == 200 and loose["report"]["settings"]["adapter"] == "/somewhere/else"


def test_compare_names_the_settings_that_differ(server, runs_dir):
    runs = runs_by_name(server)
    a, b = runs["finished"]["id"], runs["deep/er/nested"]["id"]
    status, same = get_json(server, f"/ui/api/compare?id={a}&id={b}")
    assert status == 200 and same["differing"] == {}  # output_dir differs by nature and is left out
    assert [r["name"] for r in same["runs"]] == ["finished", "deep/er/nested"]
    status, body = get_json(server, "/ui/api/compare")
    assert status == 400 and body["error"]["param"] == "id"
    assert get_json(server, f"/ui/api/compare?id={a}&id=nope")[0] == 404


def test_reading_a_growing_file_never_returns_half_a_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1}\n{"step": 2}\n{"st')
    chunk = read_since(tmp_path, path, None)
    assert [r["step"] for r in chunk.records] == [1, 2]
    path.write_bytes(path.read_bytes() + b'ep": 3, "loss": NaN}\n')
    chunk = read_since(tmp_path, path, chunk.cursor)
    assert chunk.records == [{"step": 3, "loss": None}] and not chunk.reset
    assert not any(isinstance(v, float) and math.isnan(v) for v in chunk.records[0].values())
    assert read_since(tmp_path, path, f"{os.stat(path).st_ino + 1}-0-0").reset  # the file was replaced
    for malformed in ("garbage-cursor", "\u00b2-1-1", "1-2", "1-2-3-4", "\u0663-1-1", " 1-2-3", "1-2-3\n"):
        with pytest.raises(BadCursor):
            read_since(tmp_path, path, malformed)


def test_a_malformed_metrics_cursor_is_a_400(server):
    """'²' passed str.isdigit() and then broke int(): a 500, before."""
    run_id = runs_by_name(server)["finished"]["id"]
    for since in ("%C2%B2-1-1", "%D9%A3-0-0", "1-2", "x-y-z", "1-2-3-", "-1-2-3", "%EF%BC%91-1-1"):
        status, body = get_json(server, f"/ui/api/runs/{run_id}/metrics?since={since}")
        assert status == 400, (since, status, body)
        assert body["error"]["param"] == "since" and body["error"]["code"] == "invalid_cursor"
    status, whole = get_json(server, f"/ui/api/runs/{run_id}/metrics?since=")
    assert status == 200 and whole["records"] and not whole["reset"]  # no cursor: from the start


def _request(server, method: str, path: str, headers: dict[str, str], body: bytes | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_a_host_that_is_not_loopback_is_refused_on_every_route(server):
    """DNS rebinding: a page whose own name resolves to 127.0.0.1 still sends its name as Host; it must
    not read the runs (nor even the page)."""
    run_id = runs_by_name(server)["finished"]["id"]
    routes = ["/", "/ui/static/app.js", "/health", "/ui/api/info", "/ui/api/runs", f"/ui/api/runs/{run_id}"]
    routes += [f"/ui/api/runs/{run_id}/metrics", f"/ui/api/runs/{run_id}/config", "/nothing"]
    auth = {"Authorization": f"Bearer {KEY}"}
    for path in routes:
        for host in ("attacker.example", f"attacker.example:{server.port}", "localhost.attacker.example"):
            assert _request(server, "GET", path, {**auth, "Host": host}) == 421, (path, host)
        for host in (f"localhost:{server.port}", "127.0.0.1", f"[::1]:{server.port}"):
            assert _request(server, "GET", path, {**auth, "Host": host}) in (200, 404), (path, host)


def test_ui_api_bodies_must_be_json(server):
    """No /ui/api route takes a body today; a non-JSON one is refused before routing all the same."""
    auth = {"Authorization": f"Bearer {KEY}"}
    text = {**auth, "Content-Type": "text/plain"}
    assert _request(server, "POST", "/ui/api/runs", text, b"{}") == 415
    assert (
        _request(server, "POST", "/ui/api/runs", {**auth, "Content-Type": "application/json"}, b"{}") == 405
    )


@pytest.mark.slow
def test_allowed_hosts_are_named_by_the_operator(runs_dir, tmp_path):
    from prefkit.errors import PrefkitError
    from prefkit.web.guard import host_allow_list

    assert host_allow_list("127.0.0.1") == frozenset() and host_allow_list("::1") == frozenset()
    assert host_allow_list("0.0.0.0") is None  # as before, and the start-up log says so
    assert host_allow_list("0.0.0.0", ["Models.Example.com", "10.0.0.5"]) == {
        "models.example.com",
        "10.0.0.5",
    }
    for bad in ("models.example.com:8000", "http://models.example.com", "a b", ""):
        with pytest.raises(PrefkitError, match="--allowed-host"):
            host_allow_list("127.0.0.1", [bad])
    log = tmp_path / "server.log"
    args = ["--runs", str(runs_dir), "--allowed-host", "models.example.com", "--log-level", "warning"]
    with ServerProcess(args, log=log, env={"PREFKIT_API_KEY": ""}, command="ui") as process:
        assert _request(process, "GET", "/ui/api/info", {"Host": "models.example.com:443"}) == 200
        assert _request(process, "GET", "/ui/api/info", {"Host": "other.example.com"}) == 421
    said = log.read_text()
    assert "no API key: any program on this machine can use this server" in said
    assert "/ui/api reads the runs under" in said


def test_the_page_builds_no_html_from_strings_and_loads_nothing_from_elsewhere():
    for path in STATIC.iterdir():
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".js":
            code = "\n".join(line for line in text.splitlines() if not line.strip().startswith("//"))
            for sink in (
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "Function(",
            ):
                assert sink not in code, (path.name, sink)
        urls = set(re.findall(r"https?://[^\s\"')]+", text)) - {"http://www.w3.org/2000/svg"}
        assert not urls, (path.name, urls)


@pytest.mark.slow
def test_the_commands_refuse_a_missing_runs_folder_and_adapters_without_a_model(tmp_path):
    def prefkit(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "prefkit", *args], capture_output=True, text=True, timeout=120
        )

    missing = prefkit("ui", "--runs", str(tmp_path / "nope"), "--port", "0")
    assert missing.returncode == 2 and f"--runs {tmp_path / 'nope'}: not a folder" in missing.stderr
    lonely = prefkit("ui", "--runs", str(tmp_path), "--adapter", f"a={tmp_path}")
    assert lonely.returncode == 2 and "--adapter needs --model" in lonely.stderr
    # serve: --runs alone turns the page on, and its folder is checked before any model is loaded.
    serve = prefkit("serve", "--model", str(tmp_path / "no-model"), "--runs", str(tmp_path / "nope"))
    assert serve.returncode == 2 and f"--runs {tmp_path / 'nope'}: not a folder" in serve.stderr
