"""Data-parallel training on 2 CPU processes (torchrun, gloo): both ranks end with identical parameters,
and the loss curve equals one process's with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from toydata import toy_pairs

from prefkit.config import load_config
from prefkit.train.distributed import torchrun_command
from prefkit.train.recipe import train
from prefkit.train.run.metrics import read_metrics

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="torchrun/gloo test written for Linux")

DRIVER = textwrap.dedent("""
    import sys, torch
    from transformers import TrainerCallback
    from prefkit.config import load_config
    from prefkit.train.recipe import train

    class SaveParams(TrainerCallback):
        def on_train_end(self, args, state, control, model=None, **kwargs):
            rank = torch.distributed.get_rank()
            params = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
            torch.save(params, f"{sys.argv[1]}/params-rank{rank}.pt")

    train(load_config(None, sys.argv[2:]), callbacks=[SaveParams()])
""")


# Rank 1 alone gets an infinite loss on its 3rd batch (its gradient stays finite: the inf is a constant
# added to the loss), so only an all-reduced decision makes rank 0 skip that step too.
POISON = textwrap.dedent("""
    import dataclasses, torch
    from prefkit.train import losses

    spec, calls = losses.LOSSES["sigmoid"], []

    def poisoned(p, params):
        out = spec.fn(p, params)
        calls.append(1)
        if torch.distributed.get_rank() == 1 and len(calls) == 3:
            out.loss = out.loss + float("inf")
        return out

    losses.LOSSES["sigmoid"] = dataclasses.replace(spec, fn=poisoned)
""")


def overrides(
    model: Path, data: Path, out: Path, batch: int, loss: str = "sigmoid", finetuning: str = "lora"
) -> list[str]:
    return [
        f"model_name_or_path={model}",
        f"train_file={data}",
        f"output_dir={out}",
        "stage=dpo",
        f"pref_loss={loss}",
        f"finetuning_type={finetuning}",
        "lora_rank=8",
        f"learning_rate={5e-3 if finetuning == 'lora' else 1e-3}",
        f"per_device_train_batch_size={batch}",
        "max_steps=6",
        "logging_steps=1",
        "save_steps=100",
        "cutoff_len=64",
        "lr_scheduler_type=constant",
    ]


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    # Keep a PYTHONPATH that points at the source under test (a worktree), with the tests' helpers first.
    path = os.pathsep.join(p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


# kto_pair's KL reference points are batch means: they must be means over both processes' rows. Full
# fine-tuning trains the (untied) output layer, which the fused output layer would use outside DDP's forward.
# "fused": each process accumulates 2 micro-batches of 1 pair, which fusing trains as one batch of 2
# (prefkit.train.fusion), weighted per micro-batch on each process.
@pytest.mark.parametrize(
    ("loss", "finetuning", "accumulate"),
    [("sigmoid", "lora", 1), ("kto_pair", "lora", 1), ("sigmoid", "full", 1), ("sigmoid", "lora", 2)],
    ids=["sigmoid-lora", "kto_pair-lora", "sigmoid-full", "sigmoid-lora-fused"],
)
@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path, tiny_model_dir, loss, finetuning, accumulate):
    data = toy_pairs(tmp_path / "pairs.jsonl")
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    out = tmp_path / "ddp"
    out.mkdir()
    run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(driver),
            str(out),
            *overrides(tiny_model_dir, data, out, batch=2 // accumulate, loss=loss, finetuning=finetuning),
            f"gradient_accumulation_steps={accumulate}",
            # A cold reference cache: with full fine-tuning both processes fill it before training, each
            # its share (a process that had stored its share once left the other too few pairs).
            f"cache_dir={tmp_path / 'cache'}",
        ],
        tmp_path,
    )

    rank0, rank1 = (torch.load(out / f"params-rank{r}.pt") for r in (0, 1))
    assert rank0.keys() == rank1.keys() and rank0
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    assert json.loads((out / "prefkit_run.json").read_text())["world_size"] == 2

    single = train(
        load_config(
            None,
            overrides(tiny_model_dir, data, tmp_path / "single", batch=4, loss=loss, finetuning=finetuning),
        )
    )
    ddp_loss = [r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    one_loss = [r["loss"] for r in single.metrics if "loss" in r]
    assert len(ddp_loss) == len(one_loss) == 6
    assert ddp_loss == pytest.approx(one_loss, rel=1e-4)
    keys = ["rewards/margins"] + (["kl/chosen", "kl/rejected"] if loss == "kto_pair" else [])
    for key in keys:
        ddp_values = [r[key] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
        assert ddp_values == pytest.approx(
            [r[key] for r in single.metrics if "loss" in r], rel=1e-3, abs=1e-6
        )


@pytest.mark.slow
def test_a_nonfinite_loss_on_one_rank_skips_the_step_on_every_rank(tmp_path, tiny_model_dir):
    data = toy_pairs(tmp_path / "pairs.jsonl")
    driver = tmp_path / "driver.py"
    driver.write_text(POISON + DRIVER)
    out = tmp_path / "ddp"
    out.mkdir()
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(driver),
    ]
    result = run([*command, str(out), *overrides(tiny_model_dir, data, out, batch=2)], tmp_path)

    rank0, rank1 = (torch.load(out / f"params-rank{r}.pt") for r in (0, 1))
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name  # no rank stepped alone
    records = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert [r["nonfinite_steps"] for r in records] == [0, 0, 1, 1, 1, 1]
    assert result.stderr.count("step 3: non-finite loss") == 1  # logged once, by the main process
    assert f"{data}:" in result.stderr.split("step 3: non-finite loss")[1].splitlines()[0]


@pytest.mark.slow
def test_nproc_shortcut_and_mislaunch_warning(tmp_path, tiny_model_dir):
    data = toy_pairs(tmp_path / "pairs.jsonl")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "\n".join(o.replace("=", ": ", 1) for o in overrides(tiny_model_dir, data, tmp_path / "a", 2))
    )
    prefkit = str(Path(sys.executable).with_name("prefkit"))
    run([prefkit, "train", str(cfg), "--nproc", "2", "max_steps=2"], tmp_path)
    assert json.loads((tmp_path / "a" / "prefkit_run.json").read_text())["world_size"] == 2

    # `accelerate launch --cpu --num_processes 2` runs one process here; prefkit says so.
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    result = run(
        [
            accelerate,
            "launch",
            "--cpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "-m",
            "prefkit",
            "train",
            str(cfg),
            f"output_dir={tmp_path / 'b'}",
            "max_steps=1",
        ],
        tmp_path,
    )
    assert "asked for 2 processes but this run has world size 1" in result.stderr


def test_torchrun_command_shape():
    command = torchrun_command(3, ["train", "cfg.yaml"])
    assert command[1:4] == ["-m", "torch.distributed.run", "--standalone"]
    assert "--nproc_per_node=3" in command and command[-3:] == ["prefkit", "train", "cfg.yaml"]
