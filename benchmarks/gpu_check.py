"""Everything only a GPU can show, in one command, for the day a CUDA GPU is lent.

    python benchmarks/gpu_check.py [--out FILE] [--budget-s 540] [--steps 30]

Without CUDA (``torch.cuda.is_available()`` false) it prints one line saying so and what it would have run,
runs nothing, writes no results file and exits 0: a results file only ever holds figures measured on a GPU.

On a CUDA GPU it runs, within ``--budget-s`` seconds (default 540: a 10-minute device slot less a minute for
starting Python and writing), these parts in order:

1. ``tests``: ``pytest -m gpu -q`` -- tests/test_gpu.py (QLoRA on CUDA, bf16 against fp32, CUDA greedy
   generation against the CPU's, the reference-free losses) on the tiny in-repo models.
2. ``model``: the largest builtin model -- ``gemma3-270m`` where it is a builtin alias and installed, else
   ``smollm2-135m-instruct`` (the JSON records which, and why not the other) -- converted from its GGUF
   once into prefkit's cache, timed apart from training.
3. ``qlora``: QLoRA DPO on it -- examples/sigmoid.yaml (LoRA on every linear layer, ``pref_loss: sigmoid``,
   the bundled tutor pairs) with ``quantization_bit: 4`` (NF4), ``--steps`` steps, no evaluation: seconds
   per step (the median after step 1), peak allocated GPU memory, the step-1 loss (ln 2 = 0.6931 for DPO:
   at step 1 the policy is its reference) and how many 4-bit layers the model held.
4. ``race``: ``benchmarks/vs_trl.py --methods sigmoid --length 1024`` on that model: prefkit against TRL's
   DPOTrainer on pairs 1024 tokens long -- each side's tokens/s, peak memory and step-1 loss.

Each part runs in its own process (its own CUDA context, so its peak memory is its own) with a timeout: the
time left, shared among the parts still to run in proportion to WEIGHTS, so time a part leaves unused goes
to the later ones. A part that runs out is killed with every process it started and recorded as
``timed_out``; the parts after it still run. Every part runs with ``HF_HUB_OFFLINE=1``: nothing it does may
need the model hub or the internet (a GPU machine that cannot reach them fails fast instead of waiting).

Writes ``benchmarks/results/gpu_check-<date>.json`` (``--out``) after every part: the machine (GPU, its
memory, torch, CUDA and library versions, git commit) and each part's status (passed, failed, timed_out,
skipped), wall seconds, figures and its output's last lines. Prints a table at the end. Exit status 0 when
every part passed, else 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
# Largest first. gemma3-270m is an alias only where this prefkit ships it (and its GGUF package is
# installed); the fallback is the quickstart's model.
PREFERRED_MODELS = ("gemma3-270m", "smollm2-135m-instruct")
# The named template a builtin model trains with where its tokenizer has no chat template of its own
# (gemma3-270m is the pretrained base: see prefkit.model.sources).
TEMPLATES = {"gemma3-270m": "gemma"}
# How the budget is shared (see the module docstring); a part that needs less passes its time on. The model
# part is weighted for a first conversion: gemma3-270m's took 116 s (54 s of CPU) on a busy 2-core machine.
WEIGHTS = {"tests": 90, "model": 120, "qlora": 130, "race": 200}
RACE_LENGTH = 1024
OUTPUT_LINES = 40  # of each part's output kept in the results, to see why a part failed
LN2 = math.log(2)
# The step-1 loss may differ from ln 2 by bf16 rounding between the policy's pass and the reference's.
STEP1_TOLERANCE = 0.01


def would_run(args: argparse.Namespace) -> str:
    return (
        f"pytest -m gpu; QLoRA DPO (4-bit NF4, sigmoid, {args.steps} steps) on "
        f"{' or else '.join(PREFERRED_MODELS)}; "
        f"benchmarks/vs_trl.py --methods sigmoid --length {RACE_LENGTH} (prefkit against TRL), "
        f"within {args.budget_s:g} s"
    )


# ------------------------------------------------------------------------------------------ parts
def child_env() -> dict[str, str]:
    """The parts' environment: offline, so that a hub lookup fails at once rather than hanging on a machine
    that cannot reach the hub."""
    return dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")


def part_timeout(left: float, name: str) -> float:
    """``name``'s share of the ``left`` seconds: its weight over the weights of the parts from it on."""
    names = list(WEIGHTS)
    return left * WEIGHTS[name] / sum(WEIGHTS[n] for n in names[names.index(name) :])


def run_part(command: list[str], timeout: float) -> dict[str, Any]:
    """Run ``command`` in its own process group for at most ``timeout`` seconds: its status (passed,
    failed, timed_out), return code, wall seconds and output (stdout and stderr together)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a process group of its own, so a timeout kills what it started too
    )
    try:
        output, _ = process.communicate(timeout=timeout)
        status = "passed" if process.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # vs_trl's sides, pytest's children: the whole group
        try:
            output, _ = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # a descendant that left the group still holds the pipe
            process.kill()
            output = ""
        status = "timed_out"
    return {
        "status": status,
        "returncode": process.returncode,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "timeout_seconds": round(timeout, 1),
        "output": output,
    }


def result_line(output: str) -> dict[str, Any] | None:
    """The figures a child part printed (its last ``RESULT {json}`` line), if any."""
    found = None
    for line in output.splitlines():
        if line.startswith("RESULT "):
            found = json.loads(line[len("RESULT ") :])
    return found


def tail(output: str) -> list[str]:
    return output.splitlines()[-OUTPUT_LINES:]


def junit_counts(path: Path) -> dict[str, int] | None:
    """Tests, passed, failed, errors, skipped from pytest's JUnit XML (None where pytest wrote none)."""
    if not path.is_file():
        return None
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return None
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts


def part_tests(timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", f"--junitxml={junit}"]
        part = run_part(command, timeout)
        part["figures"] = junit_counts(junit)
    # Tests that all skipped on a GPU machine checked nothing: not a pass.
    if part["status"] == "passed" and not (part["figures"] and part["figures"]["passed"] > 0):
        part["status"] = "failed"
    return part


def part_child(name: str, extra: list[str], timeout: float) -> dict[str, Any]:
    """A part this script runs in a child process of its own (``--part NAME``)."""
    part = run_part([sys.executable, str(Path(__file__).resolve()), "--part", name, *extra], timeout)
    part["figures"] = result_line(part["output"])
    if part["status"] == "passed" and part["figures"] is None:
        part["status"] = "failed"  # it exited 0 without its figures
    return part


def part_race(model: str, template: str | None, timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable,
            str(ROOT / "benchmarks" / "vs_trl.py"),
            "--model",
            model,
            "--methods",
            "sigmoid",
            "--length",
            str(RACE_LENGTH),
            "--output",
            tmp,
            *(["--template", template] if template else []),
        ]
        part = run_part(command, timeout)
        written = sorted(Path(tmp).glob("*.json"))
        part["figures"] = race_figures(json.loads(written[0].read_text())) if written else None
    if part["status"] == "passed" and part["figures"] is None:
        part["status"] = "failed"
    return part


def qlora_problems(figures: dict[str, Any]) -> list[str]:
    """Why a QLoRA run that finished is still not the run asked for."""
    problems = []
    if not figures["four_bit_layers"]:
        problems.append("no 4-bit layers: the model was not quantised")
    if not figures["losses_finite"]:
        problems.append("a non-finite loss")
    if not figures["step1_loss_is_ln2"]:
        problems.append(
            f"step-1 loss {figures['step1_loss']}, not ln 2 = {LN2:.4f} (within {STEP1_TOLERANCE})"
        )
    return problems


def race_figures(report: dict[str, Any]) -> dict[str, Any]:
    """What the results keep of vs_trl.py's report: its one run (DPO) and the settings that say what ran."""
    run = report["runs"][0]
    keep = ("tokens_per_second", "seconds_per_step", "peak_memory_gib", "step1_loss")
    return {
        "length": report["settings"]["length"],
        "batch": report["settings"]["batch"],
        "precision": report["settings"]["precision"],
        "template": report["settings"]["template"],
        "parameters": report["parameters"],
        "prefkit": {k: run["prefkit"][k] for k in keep},
        "trl": {k: run["trl"][k] for k in keep},
        "speedup": run["speedup"],
        "memory_ratio": run["memory_ratio"],
        "loss_diff": run["loss_diff"],
        "ceiling_fraction": run["ceiling_fraction"],
    }


# ------------------------------------------------------------------------- the parts' own processes
def pick_model() -> dict[str, Any]:
    """The first of PREFERRED_MODELS that is a builtin alias here and resolves (converted into the cache
    once), the template it needs (None: its tokenizer's own), and why each one before it did not."""
    from prefkit.env import cache_dir
    from prefkit.errors import PrefkitError
    from prefkit.model.loader import load_tokenizer
    from prefkit.model.sources import BUILTIN_MODELS, resolve_model

    not_used: dict[str, str] = {}
    for alias in PREFERRED_MODELS:
        if alias not in BUILTIN_MODELS:
            not_used[alias] = "not a builtin alias in this prefkit"
            continue
        started = time.perf_counter()
        try:
            path = resolve_model(alias, cache_dir())
        except PrefkitError as err:
            not_used[alias] = str(err)
            continue
        seconds = round(time.perf_counter() - started, 1)
        own_template = bool(getattr(load_tokenizer(path), "chat_template", None))
        return {
            "model": alias,
            "path": path,
            "template": None if own_template else TEMPLATES.get(alias),
            "resolve_seconds": seconds,
            "not_used": not_used,
        }
    raise SystemExit(f"no builtin model resolves here: {json.dumps(not_used)}")


def is_4bit(module: Any) -> bool:
    """A bitsandbytes 4-bit linear layer (not peft's LoRA wrapper around one, which has the same class
    name). By name: bitsandbytes need not be importable where nothing is quantised."""
    cls = type(module)
    return cls.__name__ == "Linear4bit" and cls.__module__.startswith("bitsandbytes")


def train_figures(overrides: list[str]) -> dict[str, Any]:
    """Train examples/sigmoid.yaml with ``overrides`` into a temporary folder, with an empty reference
    cache (a warm one would skip the reference's forward passes), and measure it: step times, the step-1
    loss, the number of 4-bit layers, peak allocated CUDA memory (None without CUDA)."""
    import torch
    from transformers import TrainerCallback

    from prefkit.config import load_config
    from prefkit.train.recipe import train

    marks: list[float] = []
    four_bit: list[int] = []

    class Clock(TrainerCallback):
        def on_train_begin(
            self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any
        ) -> None:
            marks.append(time.perf_counter())
            four_bit.append(sum(is_4bit(m) for m in model.modules()))

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            marks.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp, mock.patch.dict(os.environ, {"PREFKIT_CACHE": tmp}):
        config = load_config(
            ROOT / "examples" / "sigmoid.yaml",
            [
                f"output_dir={Path(tmp) / 'run'}",
                "logging_steps=1",
                "save_steps=100000",
                "eval_strategy=no",
                "plot_loss=false",
                "report_to=none",
                *overrides,
            ],
        )
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        result = train(config, callbacks=[Clock()])
        peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None

    losses = {r["step"]: r["loss"] for r in result.metrics if "loss" in r and "train_runtime" not in r}
    seconds = [b - a for a, b in itertools.pairwise(marks)]
    return {
        "steps": result.global_step,
        "first_step_seconds": round(seconds[0], 3),
        "seconds_per_step": round(statistics.median(seconds[1:]), 4) if len(seconds) > 1 else None,
        "train_seconds": round(result.train_seconds, 1),
        "peak_memory_gib": round(peak, 3) if peak is not None else None,
        "step1_loss": losses.get(1),
        "step1_loss_is_ln2": losses.get(1) is not None and abs(losses[1] - LN2) <= STEP1_TOLERANCE,
        "last_loss": losses[max(losses)] if losses else None,
        "losses_finite": all(math.isfinite(v) for v in losses.values()),
        "four_bit_layers": four_bit[0] if four_bit else None,
    }


def child_main(args: argparse.Namespace) -> None:
    if args.part == "model":
        figures = pick_model()
    else:  # qlora
        import torch

        # bf16 as the example trains; fp16 on a GPU without bf16 (a T4).
        bf16 = torch.cuda.is_bf16_supported()
        figures = {
            "model": args.model,
            **train_figures(
                [
                    f"model_name_or_path={args.model_path}",
                    "quantization_bit=4",
                    "finetuning_type=lora",
                    "stage=dpo",
                    "pref_loss=sigmoid",
                    f"max_steps={args.steps}",
                    f"bf16={str(bf16).lower()}",
                    f"fp16={str(not bf16).lower()}",
                    *([f"template={args.template}"] if args.template else []),
                ]
            ),
        }
    print("RESULT " + json.dumps(figures), flush=True)


# ------------------------------------------------------------------------------------------ report
def machine() -> dict[str, Any]:
    import torch

    from prefkit.env import device_report, environment_report

    gpu = device_report()
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return {
        "gpu": gpu["name"],
        "gpu_count": gpu["count"],
        "gpu_memory_gib": gpu["memory_gib"],
        "compute_capability": f"{props.major}.{props.minor}",
        "bf16": gpu["bf16"],
        "cuda": torch.version.cuda,
        "cpu_cores": os.cpu_count(),
        "versions": environment_report()["versions"],
        "git_commit": git("rev-parse", "HEAD"),
        "git_changed_files": len((git("status", "--porcelain") or "").splitlines()),
    }


def git(*arguments: str) -> str | None:
    """git's answer in this checkout; None where there is no git or no repository (a copied tree)."""
    try:
        done = subprocess.run(["git", *arguments], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def summary(part: dict[str, Any]) -> str:
    f = part.get("figures")
    if part["status"] == "skipped":
        return part["reason"]
    if part.get("problems"):
        return "; ".join(part["problems"])
    if not f:
        return "no figures; see output_tail in the results"
    if part["name"] == "tests":
        return f"{f['passed']} passed, {f['failures']} failed, {f['errors']} errors, {f['skipped']} skipped"
    if part["name"] == "model":
        template = f" with template {f['template']}" if f["template"] else ""
        return f"{f['model']}{template} (resolved in {f['resolve_seconds']} s)"
    if part["name"] == "qlora":
        return (
            f"{f['model']}: {f['seconds_per_step']} s/step, peak {f['peak_memory_gib']} GiB, "
            f"step-1 loss {loss(f['step1_loss'])}, {f['four_bit_layers']} 4-bit layers"
        )
    p, t = f["prefkit"], f["trl"]
    return (
        f"length {f['length']}: prefkit {p['tokens_per_second']} tok/s, TRL {t['tokens_per_second']} "
        f"({f['speedup']}x); peak {p['peak_memory_gib']} / {t['peak_memory_gib']} GiB; "
        f"step-1 loss {loss(p['step1_loss'])} / {loss(t['step1_loss'])}"
    )


def print_table(parts: list[dict[str, Any]]) -> None:
    print(f"\n{'part':6} {'status':9} {'wall s':>7}  figures")
    for part in parts:
        print(f"{part['name']:6} {part['status']:9} {part.get('wall_seconds', 0):>7}  {summary(part)}")


# -------------------------------------------------------------------------------------------- main
def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the results JSON (default: benchmarks/results/gpu_check-<date>.json)",
    )
    parser.add_argument("--budget-s", type=float, default=540.0, help="seconds for all the parts together")
    parser.add_argument("--steps", type=int, default=30, help="QLoRA DPO steps")
    parser.add_argument("--part", choices=["model", "qlora"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    parser.add_argument("--template", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = arguments(argv)
    import torch

    if args.part:
        child_main(args)
        return 0
    if not torch.cuda.is_available():
        print(
            f"gpu_check: no CUDA GPU here (torch {torch.__version__}: torch.cuda.is_available() is false); "
            f"nothing run, no results written. On a CUDA GPU it runs: {would_run(args)}."
        )
        return 0

    out = args.out or RESULTS / f"gpu_check-{dt.date.today().isoformat()}.json"
    report: dict[str, Any] = {
        "command": "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "budget_seconds": args.budget_s,
        "machine": machine(),
        "parts": [],
    }
    model: dict[str, Any] | None = None
    for name in WEIGHTS:
        left = args.budget_s - (time.perf_counter() - started)
        share = part_timeout(left, name)
        if share < 1:
            part: dict[str, Any] = {"status": "skipped", "reason": "no time left in the budget"}
        elif name == "tests":
            part = part_tests(share)
        elif name == "model":
            part = part_child("model", [], share)
            model = part["figures"] if part["status"] == "passed" else None
        elif model is None:
            part = {"status": "skipped", "reason": "no model: the model part did not pass"}
        elif name == "qlora":
            extra = ["--model", model["model"], "--model-path", model["path"], "--steps", str(args.steps)]
            if model["template"]:
                extra += ["--template", model["template"]]
            part = part_child("qlora", extra, share)
            if part["status"] == "passed" and (problems := qlora_problems(part["figures"])):
                part["status"], part["problems"] = "failed", problems
        else:
            part = part_race(model["model"], model["template"], share)
        part = {"name": name, **part}
        if "output" in part:
            part["output_tail"] = tail(part.pop("output"))
        report["parts"].append(part)
        print(f"gpu_check: {name} {part['status']} ({part.get('wall_seconds', 0)} s)", flush=True)
        # Written after every part: a check stopped from outside still leaves what it measured.
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")

    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report["parts"])
    print(f"wrote {out}")
    return 0 if all(p["status"] == "passed" for p in report["parts"]) else 1


if __name__ == "__main__":
    sys.exit(main())
