"""What a sweep's runs share, measured: the same 2x2 DPO sweep (pref_beta x learning_rate) run twice, each
from an empty reference cache -- once as prefkit runs it (the reference cache on, the default) and once
with ``reference_cache=false`` (every run computes the reference every step, as without sharing) --
counting the trainer's model forwards (policy and reference), the pairs whose reference log-probs were
computed, how often the data was prepared (and what one preparation costs), and the wall time.

    python benchmarks/sweep_sharing.py [--model smollm2|tiny] [--steps N] [--output FILE]

``smollm2``: the builtin SmolLM2-135M-Instruct on the bundled tutor pairs (303 train, 60 held out);
``tiny``: the test suite's random tiny Llama on toy pairs (a quick check that the benchmark works).
Forward counts do not depend on the machine; the times do: take them on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
GRID = ["pref_beta=0.1,0.3", "learning_rate=5e-4,1e-3"]


def base_config(folder: Path, model: str, steps: int) -> Path:
    if model == "tiny":
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny import build_tiny_model
        from toydata import toy_pairs

        values: dict[str, Any] = {
            "model_name_or_path": str(build_tiny_model(folder / "tiny-model")),
            "train_file": str(toy_pairs(folder / "pairs.jsonl", n=48)),
            "val_size": 8,
            "cutoff_len": 64,
        }
    else:
        values = {
            "model_name_or_path": "smollm2-135m-instruct",
            "train_file": "builtin:tutor_train",
            "eval_file": "builtin:tutor_test",
            "cutoff_len": 160,
        }
    values.update(
        {
            "stage": "dpo",
            "pref_loss": "sigmoid",
            "lora_rank": 8,
            "per_device_train_batch_size": 4,
            "max_steps": steps,
            "logging_steps": 5,
            "save_steps": steps,
            "report_to": "none",
            "plot_loss": False,
            "eval_max_new_tokens": 24,
            "output_dir": str(folder / "unused"),
        }
    )
    path = folder / "base.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


def one_sweep(config: Path, folder: Path, overrides: list[str]) -> dict[str, Any]:
    import prefkit.train.trainer as trainer_module
    from prefkit.env import cache_dir
    from prefkit.sweep import EvalSettings, run_sweep

    count = {"forwards": 0}
    real = trainer_module.sequence_logps

    def counting(model: Any, batch: dict[str, Any]) -> Any:
        count["forwards"] += 1
        return real(model, batch)

    trainer_module.sequence_logps = counting
    started = time.perf_counter()
    try:
        result = run_sweep(
            config,
            GRID,
            overrides=overrides,
            output_dir=folder,
            evaluation=EvalSettings(max_samples=8, generate=8),
        )
    finally:
        trainer_module.sequence_logps = real
    wall = time.perf_counter() - started
    steps = sum(
        json.loads((folder / r.name / "prefkit_run.json").read_text())["global_step"] for r in result.runs
    )
    cached = 0
    for db in (cache_dir() / "reference").glob("*.sqlite"):
        with sqlite3.connect(db) as conn:
            cached += conn.execute("SELECT COUNT(*) FROM logps").fetchone()[0]
    return {
        "runs": len(result.runs),
        "steps": steps,
        "trainer_forwards": count["forwards"],
        # One policy forward per step (no gradient accumulation, no evaluation during training); the rest
        # are the reference's, each over one batch of 4 pairs.
        "reference_forwards": count["forwards"] - steps,
        "reference_pairs_in_cache": cached,
        "data_prepared": result.data_prepared,
        "data_reused": result.data_reused,
        "wall_seconds": round(wall, 1),
        "train_and_eval_seconds": round(sum(a.seconds for a in result.attempts.values()), 1),
    }


def prepare_seconds(config: Path) -> float:
    """One preparation of the sweep's data (read, check, tokenise) outside a sweep: what each run would
    pay again without the in-process sharing."""
    from prefkit.config import load_config
    from prefkit.data.load import prepare_data
    from prefkit.model.loader import load_tokenizer
    from prefkit.train.recipe import model_path

    base = load_config(config)
    tokenizer = load_tokenizer(model_path(base))
    started = time.perf_counter()
    prepare_data(base, tokenizer)
    return round(time.perf_counter() - started, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("smollm2", "tiny"), default="smollm2")
    parser.add_argument("--steps", type=int, default=20, help="steps per run")
    parser.add_argument("--output", type=Path, default=None, help="write the figures here as JSON")
    args = parser.parse_args()

    figures: dict[str, Any] = {
        "command": " ".join(["python benchmarks/sweep_sharing.py", *sys.argv[1:]]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "grid": GRID,
    }
    real_cache = Path(os.environ.get("PREFKIT_CACHE") or Path.home() / ".cache" / "prefkit").expanduser()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = base_config(folder, args.model, args.steps)
        for label, overrides in (("reference_cache", []), ("no_reference_cache", ["reference_cache=false"])):
            cache = folder / f"cache-{label}"  # an empty reference cache; converted models are shared
            (cache).mkdir()
            (real_cache / "models").mkdir(parents=True, exist_ok=True)
            (cache / "models").symlink_to(real_cache / "models", target_is_directory=True)
            os.environ["PREFKIT_CACHE"] = str(cache)
            figures[label] = one_sweep(config, folder / f"sweep-{label}", overrides)
        figures["prepare_data_seconds"] = prepare_seconds(config)
    print(json.dumps(figures, indent=2))
    if args.output:
        args.output.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
