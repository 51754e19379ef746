"""The crash suite's long run: kill real `prefkit train` processes and check every rerun.

    python scripts/crash_trials.py [--random 30] [--per-phase 2] [--sigterm 3] [--rekill 0.3] [--seed 0]
                                   [--workdir DIR]

For each phase boundary prefkit marks (tests/crashkit.PHASES) it SIGKILLs a run exactly there
``--per-phase`` times; then it SIGKILLs ``--random`` runs at a random moment between claiming the
output folder and the end (training, checkpoint saves, rotation, the final save); and it stops
``--sigterm`` runs with SIGTERM once training is under way (they must exit 143). Each killed run is run
again -- and with probability ``--rekill`` that rerun is itself killed at a random moment after its
model starts loading, then run once more -- and the result must equal an uninterrupted run's: same
losses at every step, each step once in metrics.jsonl, the same final adapter, marker "finished", no
staging left. Prints one line per trial and a summary; exits 1 if any trial failed. The tiny model is
built in-repo (tests/tiny.py); no network.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from crashkit import PHASES, kill_at_random, sigterm_when_training, start, verify, wait, write_config
from tiny import build_tiny_model
from toydata import toy_pairs


def finished(out: Path) -> bool:
    marker = out / "prefkit_run.json"
    return marker.is_file() and json.loads(marker.read_text()).get("status") == "finished"


def rerun_until_done(config: Path, out: Path, log: Path, rng: random.Random, rekill: float, span: float):
    """Run again until finished, a rerun itself killed at random with probability ``rekill`` (at most
    twice). Returns (reruns, reruns killed)."""
    reruns = killed = 0
    while not finished(out):
        reruns += 1
        process = start(config, out, log)
        if rng.random() < rekill and killed < 2:
            # From when the rerun has its model loading (a rerun that only finishes never gets there).
            kill_at_random(
                process, rng, span, when=lambda: "Loading weights" in log.read_text(errors="replace")
            )
            if process.returncode == -9:
                killed += 1
                continue
        code = wait(process)
        if code != 0:
            raise RuntimeError(f"rerun exited {code}: {log.read_text()[-1500:]}")
    return reruns, killed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--random", type=int, default=30, help="runs killed at a random moment")
    parser.add_argument("--per-phase", type=int, default=2, help="runs killed at each phase boundary")
    parser.add_argument("--sigterm", type=int, default=3, help="runs stopped by SIGTERM mid-training")
    parser.add_argument("--rekill", type=float, default=0.3, help="chance a rerun is killed too")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="prefkit-crash-"))
    work.mkdir(parents=True, exist_ok=True)
    model = build_tiny_model(work / "model")
    config = write_config(work, model, toy_pairs(work / "pairs.jsonl"))
    reference = work / "reference"
    started = time.monotonic()
    process = start(config, reference, work / "reference.log")
    while process.poll() is None and not (reference / "prefkit_run.json").exists():
        time.sleep(0.02)
    claimed = time.monotonic() - started  # imports, model and data checks done: the folder is claimed
    while process.poll() is None and not finished(reference):
        time.sleep(0.02)
    done = time.monotonic() - started  # marked finished (the interpreter's exit comes after)
    if wait(process) != 0:
        print((work / "reference.log").read_text()[-3000:])
        return 1
    print(
        f"uninterrupted run: output folder claimed at {claimed:.1f} s, finished at {done:.1f} s; "
        f"work folder {work}"
    )
    span = done - claimed

    trials = [(f"{phase}", phase) for phase in PHASES for _ in range(args.per_phase)]
    trials += [("random", None) for _ in range(args.random)]
    trials += [("sigterm", "sigterm") for _ in range(args.sigterm)]
    failures = 0
    killed_again_total = 0
    for number, (label, phase) in enumerate(trials, start=1):
        out = work / f"trial-{number:03d}"
        log = work / f"trial-{number:03d}.log"
        process = start(config, out, log, phase if phase in PHASES else None)
        how = label
        if phase == "sigterm":
            sigterm_when_training(process, out, after_records=rng.randint(1, 6))
        elif phase is None:
            # A random moment between claiming the output folder and the end of the run: the kills
            # that matter (before the claim nothing is on disk yet).
            marker = out / "prefkit_run.json"
            delay = kill_at_random(process, rng, span, when=marker.exists)
            how = f"random, {delay:.1f} s after the claim"
        code = wait(process)
        if code == 0:
            how += " (finished before the kill)"
        elif phase is None and finished(out):
            how += " (after it was marked finished)"
        early = [f"SIGTERM gave exit {code}, not 143"] if phase == "sigterm" and code not in (0, 143) else []
        try:
            reruns, again = rerun_until_done(
                config, out, work / f"trial-{number:03d}-rerun.log", rng, args.rekill, span
            )
            killed_again_total += again
            problems = early + (verify(out, reference, model) if out.exists() else ["no output folder"])
        except Exception as exc:  # a report, not a traceback: the summary must still print
            reruns, again, problems = 0, 0, [f"{type(exc).__name__}: {exc}"]
        failures += bool(problems)
        status = "ok" if not problems else "FAILED: " + "; ".join(problems)
        print(
            f"{number:3d} {how:<40} exit {code:>3}, reruns {reruns} (killed again {again}): {status}",
            flush=True,
        )
    at_phases = len(PHASES) * args.per_phase
    print(
        f"\n{len(trials)} trials ({at_phases} at phase boundaries, {args.random} at random moments, "
        f"{args.sigterm} SIGTERM), "
        f"{killed_again_total} reruns killed again; {len(trials) - failures} survived, {failures} failed"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
