"""`prefkit sweep` on the tiny model: a 2x2 grid interrupted in its second run and rerun (the finished run
skipped, the interrupted one resumed with every step logged once, the rest done), every run a normal run
evaluated on the same held-out pairs, the leaderboard's order, what the runs share, failures recorded and
retried, and the grid, trials and folder rules."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import yaml
from toydata import toy_pairs
from transformers import TrainerCallback
from typer.testing import CliRunner

import prefkit.train.trainer as trainer_module
from prefkit.cli import app
from prefkit.errors import TrainingInterrupted
from prefkit.score.guards import FLAGS
from prefkit.sweep import EvalSettings, SweepError, run_sweep
from prefkit.sweep.grid import (
    GridError,
    combinations,
    parse_command_line,
    parse_group,
    run_name,
    select,
)
from prefkit.sweep.ranking import Measured, Row, best, canonical_metric, rank_rows
from prefkit.train.run.metrics import read_metrics

GRID = ["pref_beta=0.1,0.5", "learning_rate=1e-3,5e-3"]
# The tiny random model's replies are noise that the evaluation's own guards flag (off topic, other
# language); these tests are about the sweep's mechanics, so its limits let noise through. The guards
# themselves: test_eval_gaming.py, and test_a_reward_hacking_run_does_not_top_the_leaderboard below.
NOISE_PASSES = {flag: 1.0 for flag in FLAGS}
EVAL = EvalSettings(max_new_tokens=8, guard_limits=NOISE_PASSES)


def base_config(tmp_path: Path, model: Path, name: str = "base.yaml", **extra) -> Path:
    """A DPO config on 16 toy pairs (4 held out), 4 steps of 4 pairs, a checkpoint every 2 steps."""
    values = {
        "model_name_or_path": str(model),
        "train_file": str(toy_pairs(tmp_path / "pairs.jsonl", n=16)),
        "val_size": 4,
        "stage": "dpo",
        "pref_loss": "sigmoid",
        "lora_rank": 8,
        "learning_rate": 5e-3,
        "per_device_train_batch_size": 4,
        "max_steps": 4,
        "logging_steps": 1,
        "save_steps": 2,
        "cutoff_len": 64,
        "report_to": "none",
        "plot_loss": False,
        "eval_max_new_tokens": 8,
        "output_dir": str(tmp_path / "out"),
        **extra,
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


class StopInSecondRun(TrainerCallback):
    """A crash in the second run, at the start of step 4: checkpoint-2 written, step 3 already logged."""

    def __init__(self) -> None:
        self.runs = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.runs += 1

    def on_step_begin(self, args, state, control, **kwargs):
        if self.runs == 2 and state.global_step == 3:
            raise KeyboardInterrupt("simulated crash")


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, tiny_model_dir):
    """A 2x2 sweep stopped in its second run, then the same sweep again, counting the trainer's forwards."""
    tmp = tmp_path_factory.mktemp("sweep")
    config = base_config(tmp, tiny_model_dir)
    sweep_dir = tmp / "sweep"
    # A cache of its own: the session's is shared with other tests' reference caches.
    cache = tmp / "cache"
    env = pytest.MonkeyPatch()
    env.setenv("PREFKIT_CACHE", str(cache))
    try:
        with pytest.raises(KeyboardInterrupt):
            run_sweep(config, GRID, output_dir=sweep_dir, evaluation=EVAL, callbacks=[StopInSecondRun()])
        first = sorted(p.name for p in sweep_dir.iterdir() if p.name.startswith("run-"))
        finished_marker = (sweep_dir / first[0] / "prefkit_run.json").read_text()
        count = {"forwards": 0}
        real = trainer_module.sequence_logps

        def counting(model, batch):
            count["forwards"] += 1
            return real(model, batch)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(trainer_module, "sequence_logps", counting)
            result = run_sweep(config, GRID, output_dir=sweep_dir, evaluation=EVAL)
    finally:
        env.undo()
    return {
        "cache": cache,
        "config": config,
        "dir": sweep_dir,
        "first": first,
        "finished_marker": finished_marker,
        "result": result,
        "forwards": count["forwards"],
    }


@pytest.mark.slow
def test_a_2x2_sweep_leaves_four_evaluated_runs_and_a_leaderboard(interrupted):
    sweep_dir, result = interrupted["dir"], interrupted["result"]
    names = [r.name for r in result.runs]
    assert names == [
        "run-000-pref_beta=0.1,learning_rate=1e-3",
        "run-001-pref_beta=0.1,learning_rate=5e-3",
        "run-002-pref_beta=0.5,learning_rate=1e-3",
        "run-003-pref_beta=0.5,learning_rate=5e-3",
    ]
    spec = json.loads((sweep_dir / "sweep.json").read_text())
    assert [r["settings"] for r in spec["runs"]] == [
        {"pref_beta": b, "learning_rate": lr} for b in (0.1, 0.5) for lr in (1e-3, 5e-3)
    ]
    held_out = (sweep_dir / "heldout.jsonl").read_text().splitlines()
    assert len(held_out) == 4
    for name in names:
        run = sweep_dir / name
        marker = json.loads((run / "prefkit_run.json").read_text())
        assert marker["status"] == "finished"  # a normal prefkit run folder
        recorded = json.loads((run / "training_config.json").read_text())["config"]
        assert recorded["output_dir"] == str(run) and recorded["overwrite_output_dir"] is False
        report = json.loads((run / "eval.json").read_text())
        assert report["settings"]["pairs"] == 4 and report["settings"]["adapter"] == str(run)
        assert {"accuracy", "rewards/accuracies"} <= set(report["model"]["preference"])
        assert {"relevance", "rouge_l", "prompt_copy"} <= set(report["model"]["generation"])
        assert (run / "generations.jsonl").is_file()
    base = json.loads((sweep_dir / "baseline" / "eval.json").read_text())
    assert base["settings"]["adapter"] is None and base["settings"]["pairs"] == 4

    board = json.loads((sweep_dir / "leaderboard.json").read_text())
    assert board["metric"] == "accuracy" and sorted(r["run"] for r in board["rows"]) == names
    assert all(r["status"] == "evaluated" for r in board["rows"])
    text = (sweep_dir / "leaderboard.md").read_text()
    for plot in ("plot_pref_beta.png", "plot_learning_rate.png", "curves_loss.png"):
        assert (sweep_dir / plot).is_file() and f"({plot})" in text
    assert "## Settings that differ" in text and "| base model |" in text
    assert f"**Best: `{board['best']}`**" in text

    # The same command once more: everything is evaluated, nothing runs.
    again = run_sweep(interrupted["config"], GRID, output_dir=sweep_dir, evaluation=EVAL)
    assert again.attempts == {} and sorted(again.skipped) == names


def test_an_interrupted_sweep_skips_finished_runs_and_resumes_the_unfinished_one(interrupted):
    sweep_dir, result = interrupted["dir"], interrupted["result"]
    finished, stopped = interrupted["first"][:2]
    assert interrupted["first"] == [finished, stopped]  # the first attempt never reached runs 2 and 3
    assert (sweep_dir / finished / "prefkit_run.json").read_text() == interrupted["finished_marker"]
    assert finished not in result.attempts and finished in result.skipped
    assert all(result.attempts[r.name].ok for r in result.runs[1:])
    marker = json.loads((sweep_dir / stopped / "prefkit_run.json").read_text())
    assert Path(marker["resumed_from"]).name == "checkpoint-2"
    for run in result.runs:
        steps = [r["step"] for r in read_metrics(sweep_dir / run.name / "metrics.jsonl") if "loss" in r]
        assert steps == [1, 2, 3, 4], run.name  # every step once, the resumed run's too


def test_runs_share_the_prepared_data_and_the_reference_log_probs(interrupted):
    result = interrupted["result"]
    # The rerun trained 3 runs (one resumed) on one preparation of the data.
    assert (result.data_prepared, result.data_reused) == (1, 2)
    # Run 0 met every training pair, so the rerun's runs read every reference log-prob from the cache:
    # one forward per step (the policy's) -- 2 steps left of run 1, 4 each of runs 2 and 3 -- instead of two.
    assert interrupted["forwards"] == 2 + 4 + 4
    assert len(list((interrupted["cache"] / "reference").glob("*.sqlite"))) == 1  # one reference, one cache


def test_the_leaderboard_is_ordered_by_the_metric_guards_first(interrupted):
    board = json.loads((interrupted["dir"] / "leaderboard.json").read_text())
    rows = board["rows"]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    keys = [(not r["passed_guards"], -r["value"], -r["metrics"]["relevance"], r["run"]) for r in rows]
    assert keys == sorted(keys)
    assert board["best"] == next(r["run"] for r in rows if r["passed_guards"])
    # Re-ranked by another metric on the next command, without training anything.
    again = run_sweep(
        interrupted["config"], GRID, output_dir=interrupted["dir"], evaluation=EVAL, metric="eval_rouge_l"
    )
    ranked = again.leaderboard.rows
    assert again.leaderboard.metric == "rouge_l" and again.attempts == {}
    values = [r.value for r in ranked if not r.guard_failures]
    assert values == sorted(values, reverse=True)


def test_a_reward_hacking_run_does_not_top_the_leaderboard():
    """Preference accuracy and style up, replies off the subject: ranked below every run that kept its
    replies on the subject, whatever its metric."""
    figures = {
        "accuracy": 0.5,
        "socratic": 0.0,
        "relevance": 0.40,
        "prompt_copy": 0.10,
        "repeated_4gram_share": 0.0,
    }

    def evaluated(changed: dict[str, float], failed_guards: tuple[str, ...] = ()) -> Measured:
        metrics = {**figures, **changed}
        return Measured(metrics, {"en": metrics}, failed_guards)

    base = evaluated({})
    honest = Row(
        "run-000-honest", "evaluated", {}, evaluated({"accuracy": 0.80, "socratic": 0.6, "relevance": 0.42})
    )
    hacking = Row(
        "run-001-hacking", "evaluated", {}, evaluated({"accuracy": 0.98, "socratic": 1.0, "relevance": 0.05})
    )
    copying = Row(
        "run-002-copying",
        "evaluated",
        {},
        evaluated({"accuracy": 0.95, "relevance": 0.9, "prompt_copy": 0.7}),
    )
    collapsed = Row(  # every figure up, but its own evaluation found the same reply to every prompt
        "run-004-collapsed",
        "evaluated",
        {},
        evaluated({"accuracy": 0.99, "socratic": 1.0}, ("duplicate (en)",)),
    )
    failed = Row("run-003-failed", "failed", {}, None, error="boom")
    for metric in ("accuracy", "socratic"):
        ranked = rank_rows([failed, hacking, copying, collapsed, honest], metric, base)
        assert ranked[0] is honest and best(ranked) is honest and ranked[-1] is failed
        assert any("relevance (en): 0.050 < baseline 0.400" in f for f in hacking.guard_failures)
        assert any("prompt_copy" in f for f in copying.guard_failures)
        assert collapsed.guard_failures == ["duplicate (en)"]
        assert failed.rank is None
    # Among runs that fail a guard, the metric still orders them.
    ranked = rank_rows([copying, hacking, honest], "relevance", base)
    assert [r.name for r in ranked] == ["run-000-honest", "run-002-copying", "run-001-hacking"]
    # Without a base model to compare with, only each run's own guards are checked.
    assert rank_rows([honest, hacking], "accuracy", None)[0] is hacking
    ranked = rank_rows([honest, collapsed], "accuracy", None)
    assert ranked[0] is honest and best(ranked) is honest
    # A run that fails a guard is never best, even when no run passes.
    assert best(rank_rows([collapsed], "accuracy", None)) is None


def test_the_metric_is_a_held_out_one():
    assert canonical_metric("eval_rewards/accuracies") == "rewards/accuracies"
    assert canonical_metric("socratic", ["socratic"]) == "socratic"
    assert canonical_metric("combined_score", ["my_scores.py:combined_score"]) == "combined_score"
    with pytest.raises(SweepError, match="not a held-out metric"):
        canonical_metric("loss")


def test_grid_groups_are_crossed_within_and_added_together():
    command = parse_command_line(
        [
            "cfg.yaml",
            "max_steps=5",
            "--grid",
            "pref_beta=1,2",
            "simpo_gamma=0.3,0.5",
            "--grid=pref_loss=orpo,sigmoid",
        ]
    )
    assert command.config == "cfg.yaml" and command.overrides == ["max_steps=5"]
    combos = combinations([parse_group(g) for g in command.groups])
    assert [c.label() for c in combos] == [
        "pref_beta=1,simpo_gamma=0.3",
        "pref_beta=1,simpo_gamma=0.5",
        "pref_beta=2,simpo_gamma=0.3",
        "pref_beta=2,simpo_gamma=0.5",
        "pref_loss=orpo",
        "pref_loss=sigmoid",
    ]
    listed = combinations([parse_group(['lora_target=["q_proj,v_proj", all]', "learning_rate=1e-6"])])
    assert [c.overrides for c in listed] == [
        ["lora_target=q_proj,v_proj", "learning_rate=1e-6"],
        ["lora_target=all", "learning_rate=1e-6"],
    ]
    assert run_name(3, listed[0]) == "run-003-lora_target=q_proj,v_proj,learning_rate=1e-6"
    assert run_name(7, parse_group_combo("template=a/b c:d")) == "run-007-template=a_b_c_d"
    long = run_name(0, parse_group_combo("template=" + "x" * 300))
    assert len(long) == 120 and long.startswith("run-000-template=xxx")
    for bad, message in (
        (["pref_beta"], "expected key=value1"),
        (["pref_beta=1,,2"], "empty value"),
        (["pref_beta=1,1"], "listed twice"),
        (["output_dir=a,b"], "cannot be swept"),
        (["pref_beta=1", "pref_beta=2"], "given twice"),
        (["lora_target=[a"], "not a YAML list"),
    ):
        with pytest.raises(GridError, match=message):
            parse_group(bad)
    with pytest.raises(GridError, match="unknown option --metirc"):
        parse_command_line(["cfg.yaml", "--grid", "a=1,2", "--metirc", "x"])
    with pytest.raises(GridError, match="at least one --grid"):
        parse_command_line(["cfg.yaml", "a=1"])


def parse_group_combo(text: str):
    return combinations([parse_group([text])])[0]


def test_random_trials_are_seeded_reproducible_and_extend_by_prefix():
    combos = combinations(
        [parse_group(["pref_beta=1,2,3", "simpo_gamma=0.3,0.5,0.7", "learning_rate=1e-6,5e-6,1e-5"])]
    )
    assert len(combos) == 27
    four = select(combos, 4, True, seed=7)
    assert four == select(combos, 4, True, seed=7) and len(set(four)) == 4
    assert select(combos, 6, True, seed=7)[:4] == four  # asking for more keeps the earlier runs
    assert select(combos, 4, True, seed=8) != four
    assert select(combos, 4, False, seed=7) == combos[:4]
    assert select(combos, 100, True, seed=7) == combos
    with pytest.raises(GridError, match="give --trials"):
        select(combos, None, True, 0)


def test_a_changed_base_config_is_refused_and_new_combinations_are_added(interrupted):
    config, sweep_dir = interrupted["config"], interrupted["dir"]
    with pytest.raises(SweepError) as err:
        run_sweep(
            config, GRID, overrides=["max_steps=8"], output_dir=sweep_dir, evaluation=EVAL, dry_run=True
        )
    assert "max_steps: 4 in this sweep, 8 now" in str(err.value)
    with pytest.raises(SweepError, match="evaluation max_new_tokens: 8 in this sweep, 16 now"):
        run_sweep(
            config, GRID, output_dir=sweep_dir, evaluation=EvalSettings(max_new_tokens=16), dry_run=True
        )
    # pref_beta=0.1 alone is run 1 again (the base learning rate is 5e-3); 0.9 is new.
    plan = run_sweep(config, ["pref_beta=0.1,0.9"], output_dir=sweep_dir, evaluation=EVAL, dry_run=True)
    assert [r.name for r in plan.runs] == [
        "run-001-pref_beta=0.1,learning_rate=5e-3",
        "run-004-pref_beta=0.9",
    ]
    assert plan.skipped == ["run-001-pref_beta=0.1,learning_rate=5e-3"]
    assert not (sweep_dir / "run-004-pref_beta=0.9").exists()  # a dry run writes nothing


def test_what_a_sweep_refuses_before_running_anything(tmp_path, tiny_model_dir):
    config = base_config(tmp_path, tiny_model_dir)
    with pytest.raises(SweepError, match="learning_rate=fast"):
        run_sweep(config, ["learning_rate=1e-3,fast"], output_dir=tmp_path / "s", evaluation=EVAL)
    no_eval = base_config(tmp_path, tiny_model_dir, "no_eval.yaml", val_size=0)
    with pytest.raises(SweepError, match="--eval-file"):
        run_sweep(no_eval, GRID, output_dir=tmp_path / "s", evaluation=EVAL)
    with pytest.raises(SweepError, match="changes which pairs are held out"):
        run_sweep(config, ["seed=1,2"], output_dir=tmp_path / "s", evaluation=EVAL)
    with pytest.raises(SweepError, match="is the training data"):
        on_train = EvalSettings(eval_file=str(tmp_path / "pairs.jsonl"), max_new_tokens=8)
        run_sweep(config, GRID, output_dir=tmp_path / "s", evaluation=on_train)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(SweepError, match=r"holds no sweep\.json"):
        run_sweep(config, GRID, output_dir=tmp_path / "busy", evaluation=EVAL)
    with pytest.raises(SweepError, match="sets output_dir"):
        run_sweep(config, GRID, overrides=["output_dir=x"], evaluation=EVAL)
    assert not (tmp_path / "s").exists() and (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    # The model every run starts from cannot be evaluated (its adapter is missing): stop before any run.
    missing = base_config(
        tmp_path, tiny_model_dir, "missing.yaml", adapter_name_or_path=str(tmp_path / "no-sft")
    )
    with pytest.raises(SweepError, match="the evaluation of the model the runs start from failed"):
        run_sweep(missing, GRID, output_dir=tmp_path / "s", evaluation=EVAL)
    assert not any(p.name.startswith("run-") for p in (tmp_path / "s").iterdir())


def test_the_command_line(tmp_path, tiny_model_dir):
    config = base_config(tmp_path, tiny_model_dir)
    out = tmp_path / "cli-sweep"
    args = ["sweep", str(config), "max_steps=2", "--grid", "pref_beta=0.1,0.5", "learning_rate=1e-3"]
    args += ["--grid", "pref_loss=orpo", "--output-dir", str(out), "--dry-run"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "run-002-pref_loss=orpo" in result.output and "3 runs; 0 already evaluated" in result.output
    bad = CliRunner().invoke(app, ["sweep", str(config), "--grid", "pref_beta=1", "--metric", "loss"])
    assert bad.exit_code == 2 and "not a held-out metric" in bad.output


@pytest.mark.slow
def test_a_failed_run_is_recorded_the_sweep_goes_on_and_a_rerun_retries_it(tmp_path, tiny_model_dir):
    """Two worker processes; one run's LoRA targets a module the model does not have."""
    config = base_config(tmp_path, tiny_model_dir, max_steps=2)
    sweep_dir = tmp_path / "sweep"
    grid = ["lora_target=all,no_such_module"]
    result = run_sweep(config, grid, output_dir=sweep_dir, evaluation=EVAL, parallel=2)
    good, bad = (r.name for r in result.runs)
    assert result.attempts[good].ok and not result.attempts[bad].ok
    assert "no_such_module" in result.attempts[bad].error
    assert (sweep_dir / "logs" / f"{bad}.log").is_file()
    board = json.loads((sweep_dir / "leaderboard.json").read_text())
    assert [r["run"] for r in board["rows"]] == [good, bad]
    assert board["rows"][1]["status"] == "failed" and board["rows"][1]["rank"] is None
    assert "failed: " in (sweep_dir / "leaderboard.md").read_text()

    again = run_sweep(config, grid, output_dir=sweep_dir, evaluation=EVAL)
    assert list(again.attempts) == [bad]  # the finished run and the baseline are not run again
    state = json.loads((sweep_dir / "state.json").read_text())["jobs"]
    assert state[bad]["attempts"] == 2 and state[good]["attempts"] == 1


@pytest.mark.slow
def test_the_same_sweep_on_a_local_ray_instance(tmp_path, tiny_model_dir):
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'prefkit[ray]'")
    config = base_config(tmp_path, tiny_model_dir, max_steps=2)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = run_sweep(
            config,
            GRID,
            output_dir=tmp_path / "sweep",
            evaluation=EVAL,
            backend="ray",
            trials=2,
            random=True,
            seed=3,
        )
    finally:
        ray.shutdown()
    assert len(result.runs) == 2 and all(a.ok for a in result.attempts.values())
    assert set(result.attempts) == {"baseline", *(r.name for r in result.runs)}
    for run in result.runs:
        assert (
            json.loads((tmp_path / "sweep" / run.name / "prefkit_run.json").read_text())["status"]
            == "finished"
        )
    rows = result.leaderboard.rows
    assert all(r.status == "evaluated" and r.rank for r in rows)


def test_prepared_data_is_shared_only_where_the_data_is_the_same(tmp_path, tiny_model_dir):
    from prefkit.config import load_config
    from prefkit.data.load import prepare_data
    from prefkit.data.reuse import shared_preparation
    from prefkit.model.loader import load_tokenizer

    path = base_config(tmp_path, tiny_model_dir)
    tokenizer = load_tokenizer(str(tiny_model_dir))
    with shared_preparation() as shared:
        first = prepare_data(load_config(path), tokenizer)
        # Training settings do not touch the data: the same preparation.
        assert (
            prepare_data(
                load_config(path, ["learning_rate=1e-4", "pref_loss=simpo", "lora_rank=4"]), tokenizer
            )
            is first
        )
        # The tokenisation (cutoff_len) and the split (seed, with val_size) do: prepared again.
        assert prepare_data(load_config(path, ["cutoff_len=48"]), tokenizer) is not first
        assert prepare_data(load_config(path, ["seed=3"]), tokenizer) is not first
        toy_pairs(tmp_path / "pairs.jsonl", n=17)  # the data file changed on disk
        assert len(prepare_data(load_config(path), tokenizer).train_examples) == 13
    assert (shared.computed, shared.reused) == (4, 1)
    assert prepare_data(load_config(path), tokenizer) is not first  # outside the block nothing is kept


class SignalAtStep(TrainerCallback):
    """The real thing: SIGINT to this process at the start of the first run's step 2."""

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 1:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.slow
def test_ctrl_c_stops_the_sweep_not_only_the_run(tmp_path, tiny_model_dir):
    config = base_config(tmp_path, tiny_model_dir)
    sweep_dir = tmp_path / "sweep"
    with pytest.raises(TrainingInterrupted) as stopped:
        run_sweep(
            config, ["pref_beta=0.1,0.5"], output_dir=sweep_dir, evaluation=EVAL, callbacks=[SignalAtStep()]
        )
    assert stopped.value.exit_code == 130
    runs = sorted(p for p in sweep_dir.iterdir() if p.name.startswith("run-"))
    assert len(runs) == 1  # the second run never started
    assert (runs[0] / "checkpoint-2").is_dir()  # the interrupted run saved its step on the way out


@pytest.mark.slow
def test_a_config_edited_while_the_sweep_runs_is_refused_for_the_runs_not_yet_trained(
    tmp_path, tiny_model_dir
):
    config = base_config(tmp_path, tiny_model_dir, max_steps=2)
    sweep_dir = tmp_path / "sweep"

    class EditTheConfig(TrainerCallback):
        def on_train_end(self, args, state, control, **kwargs):
            values = yaml.safe_load(config.read_text())
            values["max_steps"] = 3
            config.write_text(yaml.safe_dump(values))

    result = run_sweep(
        config, ["pref_beta=0.1,0.5"], output_dir=sweep_dir, evaluation=EVAL, callbacks=[EditTheConfig()]
    )
    first, second = (r.name for r in result.runs)
    assert result.attempts[first].ok
    assert not result.attempts[second].ok and "max_steps" in result.attempts[second].error
    assert not (sweep_dir / second / "prefkit_run.json").exists()


def test_metrics_that_would_rank_by_the_setting_or_by_length_are_refused(tmp_path, tiny_model_dir):
    config = base_config(tmp_path, tiny_model_dir)
    with pytest.raises(SweepError, match="not comparable across this grid"):
        run_sweep(
            config, ["pref_beta=0.1,0.5"], metric="rewards/margins", output_dir=tmp_path / "s", dry_run=True
        )
    with pytest.raises(SweepError, match="longer is not better"):
        run_sweep(
            config, ["pref_beta=0.1,0.5"], metric="length_words", output_dir=tmp_path / "s", dry_run=True
        )
    # A user scorer may report any name, so a typo is caught once the base model's evaluation says what
    # it reports -- before any run trains.
    scorer = tmp_path / "my_scores.py"
    scorer.write_text("def combined_score(sample):\n    return 1.0\n")
    with pytest.raises(SweepError, match="gives no such figure"):
        run_sweep(
            config,
            ["pref_beta=0.1,0.5"],
            metric="acuracy",
            output_dir=tmp_path / "s",
            evaluation=EvalSettings(max_new_tokens=8, scorers=(f"{scorer}:combined_score",)),
        )
    assert not any(p.name.startswith("run-") for p in (tmp_path / "s").iterdir())


@pytest.mark.slow
def test_sigterm_stops_a_parallel_sweep_and_every_worker_with_a_checkpoint(tmp_path, tiny_model_dir):
    """The sweep process gets SIGTERM (a scheduler, `kill`) while two worker processes train: each worker
    saves a checkpoint and ends, and the sweep exits 143 -- no worker trains on unwatched."""
    import subprocess
    import sys
    import time

    from prefkit.train.run.start import training_into

    config = base_config(tmp_path, tiny_model_dir, max_steps=100_000, save_steps=100_000)
    sweep_dir = tmp_path / "sweep"
    command = [sys.executable, "-m", "prefkit", "sweep", str(config), "--grid", "pref_beta=0.1,0.5"]
    command += ["--parallel", "2", "--output-dir", str(sweep_dir), "--max-new-tokens", "8"]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            logs = list(sweep_dir.glob("run-*/metrics.jsonl"))
            if len(logs) == 2 and all(p.stat().st_size > 0 for p in logs):
                break
            assert driver.poll() is None, driver.stderr.read()
            time.sleep(0.5)
        else:
            pytest.fail("the two runs did not start training")
        driver.send_signal(signal.SIGTERM)
        assert driver.wait(timeout=120) == 143, driver.stderr.read()
    finally:
        if driver.poll() is None:
            driver.kill()
    for run_dir in sorted(sweep_dir.glob("run-*")):
        assert list(run_dir.glob("checkpoint-*")), run_dir  # saved on the way out
        assert json.loads((run_dir / "prefkit_run.json").read_text())["status"] != "finished"
        with training_into(run_dir):  # free: the worker that trained it has ended
            pass


def test_a_reward_metric_is_refused_when_earlier_runs_of_the_folder_swept_beta(interrupted):
    """The leaderboard ranks every run of the folder: a later command sweeping only the learning rate
    cannot rank the earlier pref_beta runs by their (beta-scaled) rewards."""
    with pytest.raises(SweepError, match="pref_beta"):
        run_sweep(
            interrupted["config"],
            ["learning_rate=1e-3"],
            metric="rewards/margins",
            output_dir=interrupted["dir"],
            evaluation=EVAL,
            dry_run=True,
        )
