"""Generation during training (eval_generate): scorer means reach metrics.jsonl as eval_<metric>, and
metric_for_best_model on a scorer keeps the checkpoint that scorer liked best."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from toydata import toy_pairs

from prefkit.config import load_config
from prefkit.errors import PrefkitError
from prefkit.train.recipe import train
from prefkit.train.run.metrics import read_metrics

# A user scorer whose value per evaluation we choose: the 2nd of 4 evaluations (step 4) is the best.
# It counts its calls; each evaluation scores eval_generate = 2 replies.
CONTROLLED = """
SCHEDULE = [0.1, 0.9, 0.3, 0.2]
calls = 0


def controlled(sample):
    global calls
    calls += 1
    return SCHEDULE[(calls - 1) // 2]
"""


def _config(tmp_path, model, *overrides):
    return load_config(
        None,
        [
            f"model_name_or_path={model}",
            f"train_file={toy_pairs(tmp_path / 'pairs.jsonl', n=20)}",
            f"output_dir={tmp_path / 'run'}",
            "stage=dpo",
            "pref_loss=sigmoid",
            "lora_rank=4",
            "learning_rate=5e-3",
            "per_device_train_batch_size=4",
            "max_steps=8",
            "logging_steps=2",
            "cutoff_len=64",
            "val_size=4",
            "eval_strategy=steps",
            "eval_steps=2",
            "save_steps=2",
            "eval_generate=2",
            "eval_max_new_tokens=6",
            "report_to=none",
            *overrides,
        ],
    )


@pytest.mark.slow
def test_metric_for_best_model_on_a_user_scorer_picks_its_checkpoint(tmp_path, tiny_model_dir):
    scorer = tmp_path / "controlled.py"
    scorer.write_text(CONTROLLED, encoding="utf-8")
    config = _config(
        tmp_path,
        tiny_model_dir,
        f"eval_scorers={scorer}:controlled",
        "metric_for_best_model=controlled",
        "load_best_model_at_end=true",
    )
    result = train(config)
    evals = [r for r in read_metrics(result.output_dir / "metrics.jsonl") if "eval_loss" in r]
    assert [r["step"] for r in evals] == [2, 4, 6, 8]
    assert [r["eval_controlled"] for r in evals] == [0.1, 0.9, 0.3, 0.2]
    for r in evals:  # every default scorer's mean is logged beside the preference metrics
        for key in ("eval_rouge_l", "eval_relevance", "eval_closer_to_chosen", "eval_length_words"):
            assert 0 <= r[key] < 1000, key
        assert r["eval_samples"].startswith("| prompt | reply |") and "controlled" in r["eval_samples"]

    state = json.loads((result.output_dir / "checkpoint-8" / "trainer_state.json").read_text())
    assert state["best_model_checkpoint"] == str(result.output_dir / "checkpoint-4")
    assert state["best_metric"] == 0.9
    # load_best_model_at_end: the saved model is checkpoint-4's, not the last step's
    final = load_file(result.output_dir / "adapter_model.safetensors")
    best = load_file(result.output_dir / "checkpoint-4" / "adapter_model.safetensors")
    last = load_file(result.output_dir / "checkpoint-8" / "adapter_model.safetensors")
    assert final.keys() == best.keys()
    assert all(torch.equal(final[k], best[k]) for k in final)
    assert not all(torch.equal(final[k], last[k]) for k in final)


def test_eval_generate_needs_evaluations_and_a_known_scorer(tmp_path, tiny_model_dir):
    with pytest.raises(PrefkitError, match="eval_generate needs evaluations"):
        train(_config(tmp_path, tiny_model_dir, "eval_strategy=no"))
    with pytest.raises(PrefkitError, match="unknown scorer 'socratc'"):
        train(_config(tmp_path, tiny_model_dir, "eval_scorers=socratc"))
    assert not (tmp_path / "run").exists()  # refused before the output folder was touched
