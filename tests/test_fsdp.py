"""FSDP2 on 2 CPU processes (torchrun, gloo): the model is really sharded (not silently DDP), LoRA and full
fine-tuning, DPO and SFT, follow one process's loss curve with the same global batch, checkpoints resume
exactly, the saved adapter or model loads with plain from_pretrained and holds the trained weights, and
the reference cache gives every process the same answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from test_preflight import weightless
from toydata import toy_pairs, toy_sft

from prefkit.config import load_config
from prefkit.train.recipe import train
from prefkit.train.run.metrics import read_metrics
from prefkit.train.run.preflight import PreflightError
from prefkit.train.sharding import fsdp_problem

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="torchrun/gloo test written for Linux")

# The keys docs/multi-gpu.md shows (version 2 and FULL_STATE_DICT are transformers' defaults, written out).
FSDP_CONFIG = {"version": 2, "reshard_after_forward": True, "state_dict_type": "FULL_STATE_DICT"}
FSDP = ["fsdp=true", f"fsdp_config={json.dumps(FSDP_CONFIG)}"]
FSDP_YAML = "fsdp: true\nfsdp_config:\n" + "".join(
    f"  {k}: {json.dumps(v)}\n" for k, v in FSDP_CONFIG.items()
)

# Runs jobs (name, config file or None, overrides, stop-at step or 0) in one 2-process launch; for each
# it records the trained weights whole (FSDP2 and ZeRO-3 leave a shard of each on each process: they are
# gathered), how they were held, and whether a frozen reference copy was sharded too. Then checks the
# reference cache's agreement across the two processes. tests/test_deepspeed.py runs it too.
DRIVER = textwrap.dedent("""
    import json, sys, torch
    from pathlib import Path
    from torch.distributed.fsdp import FSDPModule
    from transformers import TrainerCallback
    import prefkit.train.recipe as recipe
    from prefkit.config import load_config
    from prefkit.train.sharding import AgreedReferenceCache
    from prefkit.train.refcache import ReferenceCache

    trainers = []
    prepare = recipe.prepare_sharding
    recipe.prepare_sharding = lambda trainer: (prepare(trainer), trainers.append(trainer))

    class StopAt(TrainerCallback):
        def __init__(self, step): self.step = step
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == self.step:
                raise KeyboardInterrupt("simulated crash")

    def whole(model, trained):
        if any(hasattr(p, "ds_id") for _, p in trained):  # ZeRO-3
            import deepspeed
            with deepspeed.zero.GatheredParameters([p for _, p in trained]):
                return {n: p.detach().clone() for n, p in trained}
        return {n: getattr(p, "full_tensor", p.detach)().detach().clone() for n, p in trained}

    def local_numel(p):
        return p.ds_tensor.numel() if hasattr(p, "ds_tensor") else getattr(p, "to_local", p.detach)().numel()

    class Record(TrainerCallback):
        def __init__(self, path): self.path = path
        def on_train_end(self, args, state, control, model=None, **kwargs):
            trainer = trainers[-1]
            params = list(model.named_parameters())
            trained = whole(model, [(n, p) for n, p in params if p.requires_grad])
            total = sum(getattr(p, "ds_numel", p.numel()) for _, p in params)
            plugin = trainer.accelerator.state.deepspeed_plugin
            reference = trainer.loaded.reference
            facts = {
                "fsdp_module": isinstance(model, FSDPModule),
                "zero_stage": plugin.zero_stage if plugin is not None else None,
                "local_fraction": sum(local_numel(p) for _, p in params) / total,
                "reference_sharded": None if reference is None else isinstance(reference, FSDPModule),
            }
            if torch.distributed.get_rank() == 0:
                torch.save(trained, self.path / "params.pt")
                (self.path / "facts.json").write_text(json.dumps(facts))

    out = Path(sys.argv[1])
    for name, config_file, overrides, stop in json.loads(Path(sys.argv[2]).read_text()):
        config = load_config(config_file, overrides)
        if stop:
            try:
                recipe.train(config, callbacks=[StopAt(stop)])
            except KeyboardInterrupt:
                pass
        recipe.train(config, callbacks=[Record(out / name)])

    # Rank 0 finds the pair cached and rank 1 does not: neither may use the cache (the forward of a
    # sharded model must run on both); once both have it, both read it.
    rank = torch.distributed.get_rank()
    cache = AgreedReferenceCache(ReferenceCache(out / f"cache-{rank}.sqlite"), torch.device("cpu"))
    put = lambda: cache.put(["pair"], torch.tensor([-1.0]), torch.tensor([-2.0]))
    if rank == 0:
        put()
    first = cache.get(["pair"])
    put()
    second = cache.get(["pair"])
    result = {"first": first is None, "second": None if second is None else second[1].tolist()}
    (out / f"agreed-{rank}.json").write_text(json.dumps(result))
""")


def overrides(
    model: Path, data: Path, out: Path, stage: str, finetuning: str, batch: int, *extra: str
) -> list[str]:
    return [
        f"model_name_or_path={model}",
        f"train_file={data}",
        f"output_dir={out}",
        f"stage={stage}",
        f"finetuning_type={finetuning}",
        "lora_rank=8",
        f"learning_rate={5e-3 if finetuning == 'lora' else 1e-3}",
        f"per_device_train_batch_size={batch}",
        "max_steps=4",
        "logging_steps=1",
        "save_steps=2",
        "cutoff_len=64",
        "lr_scheduler_type=constant",
        "report_to=none",
        "plot_loss=false",
        *extra,
    ]


# name -> (stage, finetuning_type, extra settings). full_dpo runs without the reference cache, so its
# frozen reference copy is loaded (and sharded) for the whole run.
JOBS = {
    "lora_dpo": ("dpo", "lora", []),
    "full_dpo": ("dpo", "full", ["reference_cache=false"]),
    "sft_lora": ("sft", "lora", []),
    "sft_full": ("sft", "full", []),
}


def launch(tmp: Path, jobs: list[list]) -> None:
    """Runs DRIVER over ``jobs`` with 2 processes (torchrun, gloo); the results land in ``tmp``."""
    (tmp / "jobs.json").write_text(json.dumps(jobs))
    (tmp / "driver.py").write_text(DRIVER)
    path = os.pathsep.join(p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH")) if p)
    # The environment's bin first: DeepSpeed builds its CPU communication op with the ninja installed there.
    bin_path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, "PATH": bin_path}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += [str(tmp / "driver.py"), str(tmp), str(tmp / "jobs.json")]
    result = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.fixture(scope="module")
def launched(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    """One torchrun launch of 2 processes: full DPO from a YAML file with the documented FSDP keys, then
    resumed from its checkpoint-2 into another folder (full_resumed); LoRA DPO stopped at step 3 and
    resumed in its folder; SFT with LoRA and full."""
    tmp = tmp_path_factory.mktemp("fsdp")
    data = {"dpo": toy_pairs(tmp / "pairs.jsonl"), "sft": toy_sft(tmp / "sft.jsonl")}
    folders = {name: tmp / name for name in [*JOBS, "full_resumed"]}

    stage, finetuning, extra = JOBS["full_dpo"]
    settings = overrides(tiny_model_dir, data[stage], folders["full_dpo"], stage, finetuning, 2, *extra)
    cfg = tmp / "cfg.yaml"
    cfg.write_text("".join(o.replace("=", ": ", 1) + "\n" for o in settings) + FSDP_YAML)
    resume = [
        f"output_dir={folders['full_resumed']}",
        f"resume_from_checkpoint={folders['full_dpo']}/checkpoint-2",
    ]
    jobs = [["full_dpo", str(cfg), [], 0], ["full_resumed", str(cfg), resume, 0]]
    for name in ("lora_dpo", "sft_lora", "sft_full"):
        stage, finetuning, extra = JOBS[name]
        job = overrides(tiny_model_dir, data[stage], folders[name], stage, finetuning, 2, *extra, *FSDP)
        jobs.append([name, None, job, 3 if name == "lora_dpo" else 0])
    launch(tmp, jobs)
    return {**folders, "root": tmp, **{f"data_{k}": v for k, v in data.items()}}


def losses(folder: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(folder / "metrics.jsonl") if "loss" in r}


def check_follows_one_process(
    launched: dict[str, Path], model: Path, tmp_path: Path, job: tuple, name: str, resumed: str | None
) -> None:
    """The 2-process run ``name`` (and ``resumed``, resumed from its checkpoint-2 into another folder)
    logged each step once, with one process's losses at the same global batch: its settings are ``job``."""
    run_marker = json.loads((launched[name] / "prefkit_run.json").read_text())
    assert run_marker["status"] == "finished" and run_marker["world_size"] == 2
    stage, finetuning, extra = job[:3]
    single = train(
        load_config(
            None,
            [
                *overrides(model, launched[f"data_{stage}"], tmp_path / "one", stage, finetuning, 4, *extra),
                "reference_cache=false",  # its own reference log-probs, not the 2-process runs' cached ones
                "save_steps=100",
            ],
        )
    )
    one = {r["step"]: r["loss"] for r in single.metrics if "loss" in r}
    assert sorted(one) == [1, 2, 3, 4]
    series = {launched[name]: [1, 2, 3, 4]}
    if resumed is not None:  # it holds the steps after the checkpoint it resumed from
        series[launched[resumed]] = [3, 4]
    for folder, steps in series.items():
        sharded = losses(folder)
        assert sorted(sharded) == steps  # each step once, resumed or not
        assert [sharded[s] for s in steps] == pytest.approx([one[s] for s in steps], rel=1e-4)
        assert sharded[steps[-1]] < sharded[steps[0]]  # it learned


def check_saved_weights(folder: Path, model: Path, lora: bool, checkpoint_files: list[str]) -> None:
    """The final adapter or model loads with plain from_pretrained and holds the weights training ended
    with (params.pt, gathered by the driver); checkpoint-4 holds ``checkpoint_files`` besides."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    weights = "adapter_model.safetensors" if lora else "model.safetensors"
    assert (folder / weights).is_file()
    for file in [weights, "trainer_state.json", *checkpoint_files]:
        assert (folder / "checkpoint-4" / file).exists(), file
    trained = torch.load(folder / "params.pt")
    base = AutoModelForCausalLM.from_pretrained(model)
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    loaded = PeftModel.from_pretrained(base, folder) if lora else AutoModelForCausalLM.from_pretrained(folder)
    params = dict(loaded.named_parameters())
    assert trained and set(trained) <= set(params)
    for key, value in trained.items():
        assert torch.isfinite(value).all() and torch.equal(params[key], value), key
    if lora:  # peft starts lora_B at zero: trained, none is
        assert all(v.abs().sum() > 0 for k, v in trained.items() if "lora_B" in k)
    else:
        assert any(not torch.equal(before[k], v) for k, v in trained.items())


def check_resumed_exactly(straight: Path, resumed: Path) -> None:
    """A full fine-tuning run resumed from checkpoint-2 of ``straight`` (a new Trainer, model and optimizer
    from the sharded state) logs its steps 3 and 4 and ends with its weights."""
    from safetensors.torch import load_file

    a, b = losses(straight), losses(resumed)
    assert [b[3], b[4]] == pytest.approx([a[3], a[4]], rel=1e-6)
    end_a, end_b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert end_a.keys() == end_b.keys()
    for key in end_a:
        torch.testing.assert_close(end_b[key], end_a[key], rtol=1e-5, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(JOBS))
def test_fsdp_shards_the_model_and_follows_one_process(launched, tiny_model_dir, tmp_path, name):
    facts = json.loads((launched[name] / "facts.json").read_text())
    assert facts["fsdp_module"] and facts["local_fraction"] == pytest.approx(0.5)  # not DDP: half each
    if name == "full_dpo":
        assert facts["reference_sharded"] is True
    resumed = "full_resumed" if name == "full_dpo" else None
    check_follows_one_process(launched, tiny_model_dir, tmp_path, JOBS[name], name, resumed)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(JOBS))
def test_saved_adapter_or_model_loads_with_the_trained_weights(launched, tiny_model_dir, name):
    # Checkpoints hold FSDP's resume state (the whole model's state dict and the optimizer's) too.
    files = ["pytorch_model_fsdp.bin", "optimizer.bin"]
    check_saved_weights(launched[name], tiny_model_dir, JOBS[name][1] == "lora", files)


@pytest.mark.slow
def test_resuming_from_a_sharded_checkpoint_is_exact(launched):
    check_resumed_exactly(launched["full_dpo"], launched["full_resumed"])
    # LoRA DPO stopped at step 3 and run again: resumed from its newest checkpoint, and (checked above)
    # logged steps 1-4 once each, with one process's losses.
    record = json.loads((launched["lora_dpo"] / "training_config.json").read_text())
    assert [r["step"] for r in record["resumed"]] == [2]


@pytest.mark.slow
def test_the_reference_cache_answers_the_same_on_every_process(launched):
    for rank in (0, 1):
        result = json.loads((launched["root"] / f"agreed-{rank}.json").read_text())
        assert result == {"first": True, "second": [-2.0]}, rank


def test_fsdp_with_one_process_is_refused_before_the_model_loads(tmp_path, tiny_model_dir):
    model = weightless(tmp_path, tiny_model_dir)  # a run that got as far as loading would fail otherwise
    data = toy_pairs(tmp_path / "pairs.jsonl")
    cfg = load_config(None, overrides(model, data, tmp_path / "run", "dpo", "lora", 2, *FSDP))
    with pytest.raises(PreflightError, match=r"fsdp: true shards the model across processes.*--nproc N"):
        train(cfg)


def test_fsdp_settings_that_cannot_work_are_named(tmp_path, tiny_model_dir):
    def problem(*settings: str, on_gpu: bool = False) -> tuple[str, str] | None:
        data = tmp_path / "pairs.jsonl"
        cfg = load_config(
            None, overrides(tiny_model_dir, data, tmp_path / "run", "dpo", "lora", 2, *settings)
        )
        return fsdp_problem(cfg, world_size=2, on_gpu=on_gpu)

    assert problem(*FSDP) is None and problem("fsdp=full_shard") is None and problem() is None
    key, sentence = problem("fsdp=true", 'fsdp_config={"fsdp_version": 1}')
    assert key == "fsdp_config" and "version 1 (FSDP1) does not run on CPU" in sentence
    assert problem("fsdp=true", 'fsdp_config={"version": 1}', on_gpu=True) is None
    state_file = tmp_path / "fsdp.json"
    state_file.write_text(json.dumps({"fsdp_state_dict_type": "SHARDED_STATE_DICT"}))
    key, sentence = problem("fsdp=true", f"fsdp_config={state_file}")
    assert key == "fsdp_config" and "state_dict_type SHARDED_STATE_DICT" in sentence
