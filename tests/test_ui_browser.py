"""The web page in a real headless Chromium against a real `prefkit serve --ui` on loopback: the tiny
model, two real tiny runs (sigmoid and simpo, served as adapters), one more run under a hostile name, and
an adapter whose reply is markup. Screenshots go to tests/artifacts/ui/ (or $PREFKIT_TEST_ARTIFACTS/ui).

Skipped, with the reason, when selenium, chromium or chromedriver is missing (`.ci/run` installs them)."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import openai
import pytest
from transformers import TrainerCallback
from uikit import ARTIFACTS, build_reply_adapter, find_browser, start_browser, train_run, write_eval

from prefkit.serve.process import ServerProcess
from prefkit.ui.runs import folder_id

pytestmark = pytest.mark.slow  # a real browser and a live server for every test

KEY = "sk-ui-browser-" + "0123456789"
HOSTILE = "<img src=x onerror=window.__pwned=1>"  # a run folder's name is untrusted text too
MARKUP_REPLY = "<script>go(1)"  # what the "markup" adapter answers to anything (see build_reply_adapter)
MAX_TOKENS = 48


@pytest.fixture(scope="module")
def browser_paths() -> tuple[str, str]:
    found = find_browser()
    if isinstance(found, str):
        pytest.skip(f"browser tests skipped: {found}")
    return found


@pytest.fixture(scope="module")
def runs_dir(browser_paths, tiny_model_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ui-runs")
    train_run(root, "sigmoid", tiny_model_dir)
    train_run(root, "simpo", tiny_model_dir, "pref_loss=simpo", "learning_rate=1e-2")
    shutil.copytree(root / "sigmoid", root / HOSTILE)
    write_eval(root / "sigmoid" / "eval-test", root / "sigmoid")  # a prefkit eval report in the run
    return root


@pytest.fixture(scope="module")
def server(runs_dir, tiny_model_dir, tmp_path_factory):
    markup = build_reply_adapter(tiny_model_dir, tmp_path_factory.mktemp("markup") / "a", MARKUP_REPLY)
    args = [
        "--model", str(tiny_model_dir), "--served-model-name", "tiny", "--dtype", "fp32",
        "--adapter", f"sigmoid={runs_dir / 'sigmoid'}", "--adapter", f"simpo={runs_dir / 'simpo'}",
        "--adapter", f"markup={markup}", "--ui", "--runs", str(runs_dir), "--log-level", "warning",
    ]  # fmt: skip
    log = tmp_path_factory.mktemp("ui-serve") / "server.log"
    with ServerProcess(args, log=log, env={"PREFKIT_API_KEY": KEY, "OMP_NUM_THREADS": "1"}) as process:
        yield process
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


@pytest.fixture(scope="module")
def driver(browser_paths, server):
    browser = start_browser(*browser_paths)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60)


def wait(driver, script: str, *args, timeout: float = 30.0):
    """Poll the page until ``script`` (a JS function body) returns a truthy value; return it."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script, *args)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {script}")
        time.sleep(0.05)


def shot(driver, name: str) -> None:
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def series_points(driver, chart: int, label: str) -> int | None:
    return driver.execute_script(
        "const p = [...document.querySelectorAll('#view-runs figure.chart')][arguments[0]]"
        '?.querySelector(`path.series[data-label="${arguments[1]}"]`);'
        "return p ? Number(p.getAttribute('data-points')) : null;",
        chart,
        label,
    )


def greedy_reply(client, model: str, prompt: str) -> str:
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], max_tokens=MAX_TOKENS, temperature=0
    )
    return reply.choices[0].message.content


def set_chat_settings(driver, view: str) -> None:
    driver.execute_script(
        "const v = document.getElementById(arguments[0]);"
        "v.querySelector('details.settings').open = true;"
        "v.querySelector('[aria-label=\"temperature\"]').value = '0';"
        "v.querySelector('[aria-label=\"max tokens\"]').value = arguments[1];",
        view,
        str(MAX_TOKENS),
    )


# Records, for every change in a view's panes, [pane, time, reply length so far, state].
WATCH = """
const view = document.getElementById(arguments[0]);
window.__seen = [];
new MutationObserver(() => {
  for (const pane of view.querySelectorAll('.pane')) {
    const replies = pane.querySelectorAll('.msg.assistant');
    const last = replies[replies.length - 1];
    if (last) window.__seen.push([Number(pane.dataset.pane), performance.now(), last.textContent.length,
                                  last.dataset.state]);
  }
}).observe(view, {subtree: true, childList: true, characterData: true, attributes: true});
"""


# Records when the page starts each request to /v1/chat/completions.
SENT = """
window.__sent = [];
const fetch = window.fetch;
window.fetch = (url, ...rest) => {
  if (String(url).includes('chat/completions')) window.__sent.push(performance.now());
  return fetch(url, ...rest);
};
"""


def send(driver, view: str, text: str) -> None:
    box = driver.find_element("css selector", f"#{view} textarea")
    box.send_keys(text)
    box.send_keys("\n")  # Enter sends


def replies(driver, view: str) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll(`#${arguments[0]} .pane`)].map(p => {"
        "  const r = p.querySelectorAll('.msg.assistant'); return r[r.length - 1].textContent; });",
        view,
    )


def all_done(view: str) -> str:
    return (
        f"const panes = [...document.querySelectorAll('#{view} .pane')];"
        "return panes.every(p => [...p.querySelectorAll('.msg.assistant')].pop()?.dataset.state === 'done');"
    )


def test_the_page_asks_for_the_key_then_lists_the_runs(driver, server):
    driver.get(server.url + "/")
    wait(driver, "return !document.getElementById('key-form').hidden")
    driver.find_element("id", "key-input").send_keys("sk-wrong\n")
    assert "Incorrect API key" in wait(driver, "return document.getElementById('key-error').textContent")
    driver.find_element("id", "key-input").send_keys(KEY + "\n")
    wait(driver, "return document.querySelectorAll('table.runs tbody tr').length === 3")
    names = driver.execute_script(
        "return [...document.querySelectorAll('table.runs td.name a')].map(a => a.textContent)"
    )
    assert sorted(names) == sorted(["sigmoid", "simpo", HOSTILE])  # the hostile name, as text
    assert driver.execute_script("return document.querySelectorAll('table.runs img').length") == 0
    assert driver.execute_script("return window.__pwned") is None
    statuses = driver.execute_script(
        "return [...document.querySelectorAll('table.runs .status')].map(s => s.textContent)"
    )
    assert statuses == ["finished"] * 3
    assert driver.execute_script("return sessionStorage.getItem('prefkit.apiKey')") == KEY
    shot(driver, "runs")


def test_a_run_shows_its_curves_and_its_config(driver, runs_dir):
    driver.execute_script(f"location.hash = '#run/{folder_id('run', 'sigmoid')}'")
    logged = [json.loads(line) for line in (runs_dir / "sigmoid" / "metrics.jsonl").read_text().splitlines()]
    wait(driver, "return document.querySelector('#view-runs h1').textContent === 'sigmoid'")
    wait(driver, "return document.querySelectorAll('#view-runs figure.chart path.series').length >= 4")
    assert series_points(driver, 0, "train") == sum("loss" in r for r in logged) == 10  # loss
    assert series_points(driver, 1, "train") == 10  # reward margin
    assert series_points(driver, 2, "train") == 10  # reward accuracy
    drawn = driver.execute_script(
        "return document.querySelector('#view-runs figure.chart path.series').getAttribute('d')"
    )
    assert drawn.count("M") == 1 and drawn.count("L") == 9  # one unbroken line through 10 points
    config = wait(
        driver,
        "return Object.fromEntries([...document.querySelectorAll('#view-runs table.kv tr')]"
        ".map(r => [r.cells[0]?.textContent, r.cells[1]?.textContent]))",
    )
    assert config["pref_loss"] == "sigmoid" and config["learning_rate"] == "0.005"
    evaluation = wait(driver, "return document.querySelector('#view-runs article.eval')?.textContent")
    assert "sigmoid/eval-test" in evaluation and "accuracy0.50.875+0.375" in evaluation
    assert "<b>Yes</b>" in evaluation and "<script>window.__pwned=4</script>" in evaluation  # as text
    assert "# prefkit eval: tiny" in evaluation  # eval.md, as text
    assert driver.execute_script("return document.querySelectorAll('main script').length") == 0
    bold = driver.execute_script("return [...document.querySelectorAll('main b')].map(b => b.textContent)")
    assert set(bold) <= {"baseline: ", "model: "}  # the page's own labels; the reply's <b> stayed text
    shot(driver, "run")


def test_two_runs_overlaid(driver):
    driver.execute_script("location.hash = '#runs'")
    wait(driver, "return document.querySelectorAll('table.runs tbody tr').length === 3")
    for name in ("sigmoid", "simpo"):
        driver.find_element("css selector", f"tr[data-run='{folder_id('run', name)}'] input").click()
    driver.find_element("xpath", "//button[starts-with(normalize-space(), 'Compare')]").click()
    wait(driver, "return document.querySelectorAll('#view-runs figure.chart path.series').length >= 6")
    for chart in range(3):  # loss, reward margin, reward accuracy: one line per run
        assert series_points(driver, chart, "sigmoid (train)") == 10
        assert series_points(driver, chart, "simpo (train)") == 10
    differing = driver.execute_script(
        "return [...document.querySelectorAll('#view-runs table.kv tbody tr')]"
        ".map(r => [...r.cells].map(c => c.textContent))"
    )
    assert ["pref_loss", "sigmoid", "simpo"] in differing
    assert ["learning_rate", "0.005", "0.01"] in differing
    shot(driver, "compare")


def test_a_chat_message_streams_a_reply(driver, client):
    driver.execute_script("location.hash = '#chat'")
    wait(driver, "return document.querySelector('#view-chat select.model')?.options.length === 4")
    set_chat_settings(driver, "view-chat")
    driver.execute_script(WATCH, "view-chat")
    prompt = "What is data science?"
    send(driver, "view-chat", prompt)
    wait(driver, all_done("view-chat"))
    (reply,) = replies(driver, "view-chat")
    assert reply == greedy_reply(client, "tiny", prompt)  # the base model's reply, whole
    partial = {n for _, _, n, state in driver.execute_script("return window.__seen") if state == "streaming"}
    assert len(partial - {0}) >= 2, partial  # shown piece by piece as it streamed, not at the end
    shot(driver, "chat")


def test_side_by_side_streams_two_models_at_once(driver, client):
    driver.execute_script("location.hash = '#side'")
    wait(driver, "return document.querySelectorAll('#view-side select.model').length === 2")
    models = driver.execute_script(
        "return [...document.querySelectorAll('#view-side select.model')].map(s => s.value)"
    )
    assert models == ["tiny", "sigmoid"]  # the base and the first adapter
    set_chat_settings(driver, "view-side")
    driver.execute_script(WATCH, "view-side")
    driver.execute_script(SENT)
    prompt = "Tell me about real-time bidding."
    send(driver, "view-side", prompt)
    wait(driver, all_done("view-side"))
    assert replies(driver, "view-side") == [greedy_reply(client, m, prompt) for m in models]
    sent = driver.execute_script("return window.__sent")
    done = [t for _, t, _, state in driver.execute_script("return window.__seen") if state == "done"]
    assert len(sent) == 2 and max(sent) < min(done), (sent, done)  # both requests were in flight together
    shot(driver, "side-by-side")


def test_a_reply_containing_markup_is_shown_as_text(driver):
    driver.execute_script("location.hash = '#chat'; window.go = (x) => { window.__pwned = x; };")
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("css selector", "#view-chat select.model")).select_by_value("markup")
    send(driver, "view-chat", "Say something.")
    wait(driver, all_done("view-chat"))
    bubble = "[...document.querySelectorAll('#view-chat .msg.assistant')].pop()"
    assert driver.execute_script(f"return {bubble}.textContent") == MARKUP_REPLY
    assert driver.execute_script(f"return {bubble}.children.length") == 0  # text, not elements
    assert driver.execute_script("return document.querySelectorAll('main script').length") == 0
    assert driver.execute_script("return window.__pwned") is None
    shot(driver, "markup-reply")


class _Slow(TrainerCallback):
    """Makes a tiny run slow enough for the page to watch it grow."""

    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(0.4)


def test_a_training_run_updates_live(driver, runs_dir, tiny_model_dir):
    steps = 20
    failure: list[BaseException] = []

    def work() -> None:
        try:
            train_run(runs_dir, "live", tiny_model_dir, f"max_steps={steps}", callbacks=[_Slow()])
        except BaseException as err:  # reported by the test below
            failure.append(err)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while not (runs_dir / "live" / "training_config.json").exists():
            assert thread.is_alive() and time.monotonic() < deadline, failure
            time.sleep(0.1)
        driver.execute_script(f"location.hash = '#run/{folder_id('run', 'live')}'")
        wait(driver, "return document.querySelector('#view-runs .status')?.textContent === 'running'")
        growing = []
        while thread.is_alive():
            points = series_points(driver, 0, "train")
            if points and (not growing or points > growing[-1]):
                growing.append(points)
                if len(growing) == 2:
                    shot(driver, "live")
            time.sleep(0.1)
        assert not failure, failure
        wait(driver, "return document.querySelector('#view-runs .status')?.textContent === 'finished'")
        wait(driver, f"return document.querySelector('#view-runs path.series')?.dataset.points === '{steps}'")
        assert len([n for n in growing if 0 < n < steps]) >= 2, growing  # drawn while it trained
    finally:
        thread.join(120)


def test_no_script_error_and_no_policy_violation(driver):
    problems = [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and "ui/api/info - Failed to load resource" not in entry["message"]
    ]
    assert problems == []
