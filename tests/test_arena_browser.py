"""The page's Arena tab in a real headless Chromium against a real `prefkit serve --ui --prompts` on
loopback: the tiny model (served as ``tiny``) and two adapters whose greedy replies are known texts, so
each pane's reply tells which model wrote it. A blind battle is typed, streamed, voted on and revealed,
and the vote checked in ``RUNS_DIR/arena/votes.jsonl``; a drawn prompt is battled with its messages; a
battle takes one vote; the standings show after a vote. The screenshot goes to tests/artifacts/ui/.

Skipped, with the reason, when selenium, chromium or chromedriver is missing (`.ci/run` installs them)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import openai
import pytest
from uikit import ARTIFACTS, build_reply_adapter, find_browser, start_browser

from prefkit.serve.process import ServerProcess

pytestmark = pytest.mark.slow  # a real browser and a live server for every test

KEY = "sk-arena-browser-" + "0123456789"
MAX_TOKENS = 24
REPLIES = {"eager": "Yes, gladly.", "curt": "No."}  # each adapter's greedy reply to anything
SYSTEM_PROMPT = [
    {"role": "system", "content": "Answer in one word."},
    {"role": "user", "content": "Is the sea salty?"},
]
PROMPTS = ["What is a prime number?", "Name a colour."]
VIEW = "#view-arena"


@pytest.fixture(scope="module")
def browser_paths() -> tuple[str, str]:
    found = find_browser()
    if isinstance(found, str):
        pytest.skip(f"browser tests skipped: {found}")
    return found


@pytest.fixture(scope="module")
def runs_dir(browser_paths, tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("arena-runs")


@pytest.fixture(scope="module")
def server(runs_dir, tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("arena-serve")
    adapters = [
        f"{name}={build_reply_adapter(tiny_model_dir, root / name, reply)}" for name, reply in REPLIES.items()
    ]
    prompts = root / "prompts.jsonl"
    lines = [{"prompt": p} for p in PROMPTS] + [{"messages": SYSTEM_PROMPT}]
    prompts.write_text("".join(json.dumps(line) + "\n" for line in lines))
    args = [
        "--model", str(tiny_model_dir), "--served-model-name", "tiny", "--dtype", "fp32",
        "--adapter", adapters[0], "--adapter", adapters[1], "--max-tokens", str(MAX_TOKENS),
        "--ui", "--runs", str(runs_dir), "--prompts", str(prompts), "--log-level", "warning",
    ]  # fmt: skip
    log = root / "server.log"
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
def expected(server) -> Callable[[str, list[dict[str, str]]], str]:
    """Each served model's greedy reply to each prompt the tests send, through /v1."""
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60)

    def reply(model: str, messages: list[dict[str, str]]) -> str:
        answer = client.chat.completions.create(
            model=model, messages=messages, max_tokens=MAX_TOKENS, temperature=0
        )
        return answer.choices[0].message.content

    return reply


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


def votes(runs_dir: Path) -> list[dict]:
    path = runs_dir / "arena" / "votes.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def panes(driver) -> dict[str, dict[str, str]]:
    """Per side: the pane's head, reply and state."""
    return driver.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#view-arena .pane[data-side]')].map(p => ["
        "  p.dataset.side, {head: p.querySelector('.pane-head').textContent,"
        "  reply: p.querySelector('.reply').textContent, state: p.dataset.state}]))"
    )


def vote_buttons_disabled(driver) -> dict[str, bool]:
    return driver.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#view-arena button[data-winner]')]"
        ".map(b => [b.dataset.winner, b.disabled]))"
    )


BOTH_DONE = (
    "const p = [...document.querySelectorAll('#view-arena .pane[data-side]')];"
    "return p.length === 2 && p.every(x => x.dataset.state === 'done');"
)

# Records, at every change in the arena while a pane streams, whether any vote button was enabled.
WATCH_VOTES = """
const view = document.querySelector('#view-arena');
window.__streaming = [];
new MutationObserver(() => {
  const states = [...view.querySelectorAll('.pane[data-side]')].map(p => p.dataset.state);
  if (states.includes('streaming')) {
    const open = [...view.querySelectorAll('button[data-winner]')].some(b => !b.disabled);
    window.__streaming.push(open);
  }
}).observe(view, {subtree: true, childList: true, characterData: true, attributes: true});
"""


def set_settings(driver) -> None:
    driver.execute_script(
        "const v = document.querySelector('#view-arena');"
        "v.querySelector('details.settings').open = true;"
        "v.querySelector('[aria-label=\"temperature\"]').value = '0';"
        "v.querySelector('[aria-label=\"max tokens\"]').value = arguments[0];",
        str(MAX_TOKENS),
    )


def check_reply(side: dict, model: str, reply: str, expected, messages) -> None:
    """The pane shows the reply the votes file records, and it is that model's greedy reply."""
    assert side["reply"] == reply
    assert reply == REPLIES.get(model) or (model == "tiny" and reply == expected("tiny", messages)), (
        model,
        reply,
    )


def test_a_blind_battle_is_voted_on_then_revealed(driver, server, runs_dir, expected):
    driver.get(server.url + "/#arena")
    wait(driver, "return !document.getElementById('key-form').hidden")
    driver.find_element("id", "key-input").send_keys(KEY + "\n")
    wait(driver, "return document.querySelector('#view-arena textarea')")
    assert "No votes recorded yet" in driver.find_element("css selector", ".arena-count").text
    assert driver.execute_script("return document.querySelector('#view-arena details.standings').hidden")
    set_settings(driver)
    name = driver.find_element("css selector", f"{VIEW} [aria-label='your name']")
    name.send_keys("tester\t")  # the change event: remembered for the next visit
    assert driver.execute_script("return localStorage.getItem('prefkit.voter')") == "tester"
    driver.execute_script(WATCH_VOTES)

    prompt = "Tell me about real-time bidding."
    box = driver.find_element("css selector", f"{VIEW} textarea")
    box.send_keys(prompt)
    box.send_keys("\n")  # Enter sends
    wait(driver, BOTH_DONE)
    streaming = driver.execute_script("return window.__streaming")
    assert streaming and not any(streaming)  # no vote while a reply was still coming
    shown = panes(driver)
    assert {s: p["head"] for s, p in shown.items()} == {"a": "Model A", "b": "Model B"}  # unnamed
    assert driver.execute_script("return document.querySelectorAll('#view-arena .model-name').length") == 0
    assert vote_buttons_disabled(driver) == {"a": False, "b": False, "tie": False, "both_bad": False}
    assert votes(runs_dir) == []  # nothing written before the vote

    driver.find_element("css selector", f"{VIEW} button[data-winner='a']").click()
    wait(driver, "return document.querySelectorAll('#view-arena .model-name').length === 2")
    (vote,) = votes(runs_dir)
    assert vote["winner"] == "a" and vote["voter"] == "tester"
    assert vote["prompt"] == [{"role": "user", "content": prompt}]  # a typed prompt goes as text
    revealed = panes(driver)
    messages = [{"role": "user", "content": prompt}]
    for side in ("a", "b"):
        model = vote[side]["model"]
        assert revealed[side]["head"] == f"Model {side.upper()}: {model}"
        check_reply(revealed[side], model, vote[side]["reply"], expected, messages)
    assert {vote["a"]["model"], vote["b"]["model"]} <= {"tiny", *REPLIES}
    assert driver.execute_script(
        "return document.querySelector('#view-arena button[data-winner=\"a\"]').classList.contains('chosen')"
    )
    assert driver.find_element("css selector", ".arena-count").text == "1 vote recorded."


def test_a_drawn_prompt_is_battled_with_its_messages(driver, runs_dir, expected):
    driver.find_element("xpath", "//*[@id='view-arena']//button[normalize-space()='New battle']").click()
    assert panes(driver)["a"]["reply"] == "" and panes(driver)["a"]["state"] is None
    draw = driver.find_element("xpath", "//*[@id='view-arena']//button[normalize-space()='Draw a prompt']")
    draw.click()
    first = wait(driver, "return document.querySelector('#view-arena textarea').value")
    assert first in PROMPTS or first == SYSTEM_PROMPT[-1]["content"]
    for _ in range(60):  # draw until the prompt with a system message comes up (1 in 3 each time)
        if driver.execute_script("return !document.querySelector('#view-arena .drawn').hidden"):
            break
        draw.click()
        time.sleep(0.1)
    drawn = driver.find_element("css selector", f"{VIEW} .drawn").text
    assert SYSTEM_PROMPT[0]["content"] in drawn  # the messages before the last one are shown
    assert (
        driver.find_element("css selector", f"{VIEW} textarea").get_attribute("value") == "Is the sea salty?"
    )

    driver.find_element("xpath", "//*[@id='view-arena']//button[normalize-space()='Battle']").click()
    wait(driver, BOTH_DONE)
    wait(driver, "return !document.querySelector('#view-arena button[data-winner=\"tie\"]').disabled")
    driver.switch_to.active_element.send_keys("3")  # focus is on the vote buttons: key 3 is "Tie"
    wait(driver, "return document.querySelectorAll('#view-arena .model-name').length === 2")
    first_vote, vote = votes(runs_dir)
    assert vote["winner"] == "tie" and vote["prompt"] == SYSTEM_PROMPT  # the drawn messages, as drawn
    assert vote["id"] != first_vote["id"]
    shown_prompt = driver.find_element("css selector", f"{VIEW} .arena-prompt").text
    assert "Answer in one word." in shown_prompt and "Is the sea salty?" in shown_prompt
    revealed = panes(driver)
    for side in ("a", "b"):
        check_reply(revealed[side], vote[side]["model"], vote[side]["reply"], expected, SYSTEM_PROMPT)


def test_a_battle_takes_one_vote_and_the_standings_show_after_it(driver, runs_dir):
    from selenium.webdriver.common.action_chains import ActionChains

    assert vote_buttons_disabled(driver) == {"a": True, "b": True, "tie": True, "both_bad": True}
    for winner in ("a", "b", "both_bad"):
        driver.find_element("css selector", f"{VIEW} button[data-winner='{winner}']").click()  # disabled
    ActionChains(driver).send_keys("1").perform()  # nor does the shortcut
    time.sleep(0.5)
    assert len(votes(runs_dir)) == 2
    assert driver.execute_script(
        "return [...document.querySelectorAll('#view-arena button.chosen')].map(b => b.dataset.winner)"
    ) == ["tie"]

    standings = f"{VIEW} details.standings"
    assert driver.execute_script(f"return !document.querySelector('{standings}').hidden")
    rows = wait(
        driver,
        f"const r = [...document.querySelectorAll('{standings} tbody tr')].map(t => t.dataset.model);"
        "return r.length ? r : null;",
    )
    voted = {v[s]["model"] for v in votes(runs_dir) for s in ("a", "b")}
    assert voted <= set(rows) <= {"tiny", *REPLIES}
    driver.execute_script(f"document.querySelector('{standings}').open = true")
    assert "votes: 2" in driver.find_element("css selector", f"{standings} .totals").text
    driver.save_screenshot(str(ARTIFACTS / "arena.png"))


def test_no_script_error_and_no_policy_violation(driver):
    problems = [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and "ui/api/info - Failed to load resource" not in entry["message"]
    ]
    assert problems == []
    assert driver.execute_script("return document.querySelectorAll('main script').length") == 0
