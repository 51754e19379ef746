"""Chat-template rendering, prompt masking and the truncation policy."""

from __future__ import annotations

import logging

import pytest

from prefkit.data.examples import ExampleError, Location, Message, PreferenceExample, SFTExample
from prefkit.data.templates import TEMPLATES, TemplateError, resolve_template
from prefkit.data.tokenize import IGNORE_INDEX, ChatEncoder, infer_seqlen

LOC = Location("t.jsonl", 1)


def pair(prompt: str, chosen: str, rejected: str, system: str | None = None) -> PreferenceExample:
    messages = ((Message("system", system),) if system else ()) + (Message("user", prompt),)
    return PreferenceExample(messages, chosen, rejected, LOC)


def test_infer_seqlen_matches_llamafactory_policy():
    # Short response: kept whole, prompt gets the rest.
    assert infer_seqlen(3000, 50, 1024) == (974, 50)
    # Long response, short prompt: prompt kept whole.
    assert infer_seqlen(100, 3000, 1024) == (100, 924)
    # Both long: shared in proportion.
    assert infer_seqlen(3000, 1000, 1000) == (750, 250)
    # Everything fits.
    assert infer_seqlen(10, 20, 100) == (10, 20)


def test_pair_masks_and_renders_with_own_template(tokenizer):
    enc = ChatEncoder(tokenizer, None, cutoff_len=512)
    p = enc.encode_pair(pair("What is RTB?", "Real-time bidding.", "No idea.", system="Be brief."))
    assert tokenizer.decode(p.prompt_ids) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is RTB?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert tokenizer.decode(p.chosen_ids) == "Real-time bidding.<|im_end|>\n"
    assert tokenizer.decode(p.rejected_ids) == "No idea.<|im_end|>\n"
    assert not p.truncated


def test_prompt_longer_than_cutoff_keeps_start_and_assistant_header(tokenizer):
    enc = ChatEncoder(tokenizer, None, cutoff_len=40)
    long_prompt = "Explain this carefully. " + "word " * 200
    p = enc.encode_pair(pair(long_prompt, "Short answer.", "Bad."))
    header = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    assert len(p.prompt_ids) + max(len(p.chosen_ids), len(p.rejected_ids)) <= 40
    assert p.prompt_ids[-len(header) :] == header  # the hand-over to the assistant survives
    assert tokenizer.decode(p.prompt_ids).startswith("<|im_start|>user\nExplain this")
    assert tokenizer.decode(p.chosen_ids) == "Short answer.<|im_end|>\n"  # a short reply is kept whole
    assert p.truncated


def test_long_responses_are_trimmed_alike(tokenizer):
    enc = ChatEncoder(tokenizer, None, cutoff_len=60)
    p = enc.encode_pair(pair("Q?", "good " * 100, "bad " * 300))
    assert len(p.chosen_ids) == len(p.rejected_ids)  # same budget for both sides
    assert len(p.prompt_ids) + len(p.chosen_ids) <= 60
    assert p.full_rejected_len > p.full_chosen_len > len(p.chosen_ids)


def test_empty_response_still_has_end_of_turn(tokenizer):
    enc = ChatEncoder(tokenizer, None, cutoff_len=64)
    p = enc.encode_pair(pair("Q?", "", "x"))
    assert tokenizer.decode(p.chosen_ids) == "<|im_end|>\n"


def test_cutoff_too_small_for_header_is_an_error(tokenizer):
    enc = ChatEncoder(tokenizer, None, cutoff_len=3)
    with pytest.raises(ExampleError, match="leaves no room for a reply"):
        enc.encode_pair(pair("Q?", "A.", "B."))


def test_sft_masks_everything_but_assistant_turns(tokenizer):
    enc = ChatEncoder(tokenizer, None, cutoff_len=512)
    ex = SFTExample(
        (
            Message("system", "S"),
            Message("user", "hi"),
            Message("assistant", "hello"),
            Message("user", "why?"),
            Message("assistant", "because"),
        ),
        LOC,
    )
    out = enc.encode_sft(ex)
    assert len(out.input_ids) == len(out.labels)
    trained = [t for t, label in zip(out.input_ids, out.labels, strict=True) if label != IGNORE_INDEX]
    assert tokenizer.decode(trained) == "hello<|im_end|>\nbecause<|im_end|>\n"
    assert tokenizer.decode(out.input_ids) == enc.render(ex.messages)


def test_sft_truncation_drops_late_turns_keeps_early_ones(tokenizer):
    enc = ChatEncoder(tokenizer, None, cutoff_len=30)
    ex = SFTExample(
        (
            Message("user", "hi"),
            Message("assistant", "hello"),
            Message("user", "long " * 100),
            Message("assistant", "x " * 100),
        ),
        LOC,
    )
    out = enc.encode_sft(ex)
    assert len(out.input_ids) <= 30
    trained = [t for t, label in zip(out.input_ids, out.labels, strict=True) if label != IGNORE_INDEX]
    assert tokenizer.decode(trained).startswith("hello<|im_end|>")
    assert out.full_len > 30


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_named_templates_split_prompt_and_reply(tokenizer, name):
    enc = ChatEncoder(tokenizer, name, cutoff_len=1024)
    ex = pair("Question?", "Answer.", "Wrong.", system="Sys.")
    p = enc.encode_pair(ex)
    full = enc.render(ex.chosen_messages())
    assert tokenizer.decode(p.prompt_ids + p.chosen_ids) == full
    assert "Answer." in tokenizer.decode(p.chosen_ids)
    assert "Answer." not in tokenizer.decode(p.prompt_ids)


def test_template_aliases_and_unknown_name():
    assert resolve_template("qwen3_nothink") == TEMPLATES["chatml"]
    assert resolve_template("qwen2_vl") == TEMPLATES["qwen"]
    assert resolve_template(None) is None and resolve_template("default") is None
    with pytest.raises(TemplateError, match="did you mean 'llama3'"):
        resolve_template("lama3")


def test_tokenizer_without_template_needs_a_named_one(tokenizer):
    bare = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, eos_token="<|im_end|>")
    bare.chat_template = None
    with pytest.raises(TemplateError, match="has no chat template"):
        ChatEncoder(bare, None)
    assert ChatEncoder(bare, "chatml").render([Message("user", "a")]) == "<|im_start|>user\na<|im_end|>\n"


def test_doubled_bos_is_warned_once(tokenizer, caplog):
    tok = tokenizer.__class__(
        tokenizer_object=tokenizer.backend_tokenizer, eos_token="<|im_end|>", bos_token="<|endoftext|>"
    )
    # A template that renders BOS twice -- what a template with BOS plus a tokenizer adding one gives.
    tok.chat_template = "{{ bos_token }}{{ bos_token }}" + TEMPLATES["chatml"]
    enc = ChatEncoder(tok, None, cutoff_len=128)
    with caplog.at_level(logging.WARNING):
        enc.encode_pair(pair("Q?", "A", "B"))
        enc.encode_pair(pair("Q2?", "A", "B"))
    assert sum("two BOS tokens" in r.message for r in caplog.records) == 1


def test_multi_turn_prompt_trains_only_the_final_reply(tokenizer):
    enc = ChatEncoder(tokenizer, None, cutoff_len=512)
    prompt = (Message("user", "Name a prime."), Message("assistant", "7."), Message("user", "Another?"))
    p = enc.encode_pair(PreferenceExample(prompt, "11.", "8.", LOC))
    assert tokenizer.decode(p.prompt_ids).endswith(
        "<|im_start|>assistant\n7.<|im_end|>\n<|im_start|>user\nAnother?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tokenizer.decode(p.chosen_ids) == "11.<|im_end|>\n"
