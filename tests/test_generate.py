"""The decoder (prefkit.infer.decode): continuous batching gives the tokens transformers' own generate
gives, rows join and leave between steps, adapters mix in one batch, text streams without breaking
characters or stop strings."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from prefkit.data.examples import Message
from prefkit.data.tokenize import ChatEncoder
from prefkit.errors import PrefkitError
from prefkit.infer.decode import Decoder, Request
from prefkit.infer.generate import generate
from prefkit.infer.sampling import SamplingSettings, default_settings
from prefkit.infer.stop import StopCondition, stop_condition
from prefkit.infer.textstream import TextStream
from prefkit.model.loader import BASE_MODEL

PROMPTS = [
    "hello",
    "What is a neural network? Explain it in detail, please, with an example.",
    "機械学習とは何ですか？",
    "x",
    "The quick brown fox jumps over the lazy dog.",
    "data science",
]


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def encoder(tokenizer):
    return ChatEncoder(tokenizer)


def _hf_greedy(model, ids, stop, max_new_tokens):
    out = model.generate(
        torch.tensor([ids]),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=list(stop.ids) or None,
        pad_token_id=0,
    )
    tokens = out[0, len(ids) :].tolist()
    return [t for t in tokens if t not in stop.ids]


def test_continuous_batching_matches_generate_with_rows_joining_and_leaving(model, encoder):
    stop = stop_condition(model, encoder)
    prompt_ids = [encoder.prompt_ids([Message("user", p)]) for p in PROMPTS]
    lengths = [20, 5, 12, 30, 1, 17]  # rows finish at different steps and leave the batch
    expected = [_hf_greedy(model, ids, stop, n) for ids, n in zip(prompt_ids, lengths, strict=True)]

    decoder = Decoder(model, encoder.tokenizer, max_batch=3)
    seqs = [
        decoder.sequence(Request(ids, SamplingSettings(max_new_tokens=n), stop))
        for ids, n in zip(prompt_ids, lengths, strict=True)
    ]
    decoder.add(seqs[0])
    decoder.step()
    decoder.step()  # seq 0 is two tokens in when seq 1 joins
    decoder.add(seqs[1])
    decoder.step()
    for seq in seqs[2:]:  # more than max_batch: they wait, then take freed places
        decoder.add(seq)
    widths = []
    while decoder.has_work:
        assert len(decoder.running) <= 3
        decoder.step()
        if decoder._mask is not None:
            widths.append(decoder._mask.shape[1])
    for seq, want, n in zip(seqs, expected, lengths, strict=True):
        assert seq.generated == want
        assert seq.finish_reason == "length" and len(seq.generated) == n
    assert decoder._cache is None and not decoder.running  # everything freed
    assert max(widths) <= max(len(i) for i in prompt_ids) + max(lengths)  # padding columns are trimmed


def test_cancelled_sequences_leave_and_the_rest_are_unaffected(model, encoder):
    stop = stop_condition(model, encoder)
    prompt_ids = [encoder.prompt_ids([Message("user", p)]) for p in PROMPTS[:3]]
    decoder = Decoder(model, encoder.tokenizer, max_batch=4)
    seqs = [decoder.sequence(Request(ids, SamplingSettings(max_new_tokens=15), stop)) for ids in prompt_ids]
    for seq in seqs:
        decoder.add(seq)
    decoder.step()
    seqs[1].cancel()
    finished = [u.seq for u in decoder.step() if u.finished]
    assert finished == [seqs[1]] and seqs[1].finish_reason == "cancelled"
    assert seqs[1] not in decoder.running
    while decoder.has_work:
        decoder.step()
    for i in (0, 2):
        assert seqs[i].generated == _hf_greedy(model, prompt_ids[i], stop, 15)


def test_stop_ids_end_a_reply_and_count_as_generated(model, encoder):
    ids = encoder.prompt_ids([Message("user", "hello")])
    free = _hf_greedy(model, ids, StopCondition((), ()), 6)
    # Make the 4th token a stop id: the reply ends before it, and the stop token counts in the usage.
    decoder = Decoder(model, encoder.tokenizer)
    seq = decoder.sequence(Request(ids, SamplingSettings(max_new_tokens=6), StopCondition((free[3],), ())))
    decoder.add(seq)
    while decoder.has_work:
        decoder.step()
    assert seq.generated == free[:3] and seq.finish_reason == "stop" and seq.completion_tokens == 4
    ignoring = decoder.sequence(
        Request(ids, SamplingSettings(max_new_tokens=6), StopCondition((free[3],), ()), ignore_eos=True)
    )
    decoder.add(ignoring)
    while decoder.has_work:
        decoder.step()
    assert ignoring.generated == free and ignoring.finish_reason == "length"


def test_seeded_sampling_does_not_depend_on_batch_company(model, encoder):
    stop = StopCondition((), ())
    settings = SamplingSettings(
        max_new_tokens=12, do_sample=True, temperature=0.9, top_k=50, top_p=0.95, seed=7
    )
    ids = encoder.prompt_ids([Message("user", "hello")])

    def run(company: int) -> list[int]:
        decoder = Decoder(model, encoder.tokenizer, max_batch=8)
        seq = decoder.sequence(Request(ids, settings, stop))
        decoder.add(seq)
        for p in PROMPTS[:company]:
            other = SamplingSettings(max_new_tokens=12, do_sample=True, seed=99)
            decoder.add(decoder.sequence(Request(encoder.prompt_ids([Message("user", p)]), other, stop)))
        while decoder.has_work:
            decoder.step()
        return seq.generated

    alone = run(0)
    assert run(3) == alone and run(5) == alone
    other_seed = Decoder(model, encoder.tokenizer)
    seq = other_seed.sequence(Request(ids, SamplingSettings(max_new_tokens=12, do_sample=True, seed=8), stop))
    other_seed.add(seq)
    while other_seed.has_work:
        other_seed.step()
    assert seq.generated != alone


def test_adapters_mix_in_one_batch(tiny_model_dir, encoder, tiny_adapters):
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    model = PeftModel.from_pretrained(base, str(tiny_adapters["a"]), adapter_name="a")
    model.load_adapter(str(tiny_adapters["b"]), adapter_name="b")
    model.eval()
    stop = StopCondition((), ())
    ids = encoder.prompt_ids([Message("user", "hello")])

    def alone(adapter: str) -> list[int]:
        if adapter == BASE_MODEL:
            with model.disable_adapter():
                return model.generate(torch.tensor([ids]), max_new_tokens=10, do_sample=False)[
                    0, len(ids) :
                ].tolist()
        model.set_adapter(adapter)
        return model.generate(torch.tensor([ids]), max_new_tokens=10, do_sample=False)[0, len(ids) :].tolist()

    expected = {name: alone(name) for name in ("a", "b", BASE_MODEL)}
    model.set_adapter("a")
    assert len({tuple(v) for v in expected.values()}) == 3  # the adapters really change the output
    decoder = Decoder(model, encoder.tokenizer, max_batch=6)
    seqs = {}
    for name in ("b", BASE_MODEL, "a", None):  # None: the active adapter ("a")
        seqs[name] = decoder.sequence(Request(ids, SamplingSettings(max_new_tokens=10), stop, adapter=name))
        decoder.add(seqs[name])
    while decoder.has_work:
        decoder.step()
    assert seqs["a"].generated == expected["a"] == seqs[None].generated
    assert seqs["b"].generated == expected["b"]
    assert seqs[BASE_MODEL].generated == expected[BASE_MODEL]


def test_generate_keeps_its_contract(model, encoder):
    prompts = [[Message("user", p)] for p in PROMPTS]
    counts: list[int] = []
    replies = generate(
        model,
        encoder,
        prompts,
        settings=SamplingSettings(max_new_tokens=8),
        batch_size=4,
        on_batch=counts.append,
    )
    stop = stop_condition(model, encoder)
    assert sum(counts) == len(prompts)
    for prompt, reply in zip(prompts, replies, strict=True):
        ids = _hf_greedy(model, encoder.prompt_ids(prompt), stop, 8)
        # (a reply cut off mid-character ends before it: the decoded U+FFFD is not part of it)
        assert reply == encoder.tokenizer.decode(ids, skip_special_tokens=True).rstrip("\ufffd").strip()


def test_text_streams_whole_characters(tokenizer):
    text = "機械学習はデータから規則を学びます。なぜでしょうか？ Data science!"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text) / 2  # several tokens per character somewhere: bytes are split
    stream = TextStream(tokenizer)
    pieces = [stream.push(t) for t in ids] + [stream.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    # Stopped in the middle of a character (max_tokens): the reply ends before that character.
    k = next(k for k in range(1, len(ids)) if tokenizer.decode(ids[:k]).endswith("\ufffd"))
    cut = TextStream(tokenizer)
    shown = "".join(cut.push(t) for t in ids[:k]) + cut.flush()
    assert shown == tokenizer.decode(ids[:k]).rstrip("\ufffd") and text.startswith(shown)


def test_stop_strings_are_cut_and_never_half_shown(tokenizer):
    text = "Sure. The answer is 42.\nUser: and now?"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    stream = TextStream(tokenizer, stop_strings=["\nUser:"])
    shown = ""
    for token in ids:
        shown += stream.push(token)
        assert "\nUs" not in shown  # the start of the stop string is held back, not shown then retracted
        if stream.stopped:
            break
    shown += stream.flush()
    assert shown == "Sure. The answer is 42." == stream.text and stream.stopped
    # Text that only starts like a stop string is released in the end.
    partial = TextStream(tokenizer, stop_strings=["\nUser:"])
    shown = "".join(partial.push(t) for t in tokenizer("Hi\nUs", add_special_tokens=False)["input_ids"])
    assert shown + partial.flush() == "Hi\nUs" and not partial.stopped


def test_default_settings(model):
    assert default_settings(model) == SamplingSettings()
    assert default_settings(model, temperature=0.0, max_new_tokens=5) == SamplingSettings(max_new_tokens=5)
    sampled = default_settings(model, temperature=0.7, top_p=0.9)
    assert sampled.do_sample and sampled.temperature == 0.7 and sampled.top_p == 0.9
    model.generation_config.do_sample = True
    model.generation_config.temperature = 0.6
    try:
        assert default_settings(model).do_sample and default_settings(model).temperature == 0.6
        assert not default_settings(model, temperature=0).do_sample
    finally:
        model.generation_config.do_sample = False
        model.generation_config.temperature = 1.0
    with pytest.raises(PrefkitError, match="top_p"):
        SamplingSettings(top_p=0)


def _architectures(vocab: int) -> dict:
    from transformers import (
        Gemma2Config,
        Gemma2ForCausalLM,
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        GPT2Config,
        GPT2LMHeadModel,
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    small = {"vocab_size": vocab, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
    heads = {"num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256}
    return {
        "gpt2 (DialoGPT's family)": lambda: GPT2LMHeadModel(
            GPT2Config(
                vocab_size=vocab,
                n_embd=32,
                n_layer=2,
                n_head=4,
                n_positions=256,
                bos_token_id=0,
                eos_token_id=0,
            )
        ),
        "qwen2 (TinySwallow's family)": lambda: Qwen2ForCausalLM(Qwen2Config(**small, **heads)),
        "mistral, sliding window": lambda: MistralForCausalLM(
            MistralConfig(**small, **heads, sliding_window=8)
        ),
        "gemma2, hybrid sliding": lambda: Gemma2ForCausalLM(
            Gemma2Config(**small, **heads, head_dim=8, sliding_window=8)
        ),
        "gemma3, hybrid sliding": lambda: Gemma3ForCausalLM(
            Gemma3TextConfig(
                **small,
                **heads,
                head_dim=8,
                sliding_window=8,
                layer_types=["sliding_attention", "full_attention"],
            )
        ),
    }


@pytest.mark.parametrize("name", list(_architectures(1)))
def test_other_architectures_match_generate(name, encoder):
    torch.manual_seed(0)
    model = _architectures(len(encoder.tokenizer))[name]().eval()
    model.generation_config.eos_token_id = None  # random weights: run to max_new_tokens on both sides
    stop = StopCondition((), ())
    prompt_ids = [encoder.prompt_ids([Message("user", p)]) for p in PROMPTS[:4]]
    decoder = Decoder(model, encoder.tokenizer, max_batch=2)
    # Caches with sliding-window layers cannot take rows mid-flight: those batches run to the end.
    assert decoder.can_join == ("sliding" not in name)
    seqs = [decoder.sequence(Request(ids, SamplingSettings(max_new_tokens=12), stop)) for ids in prompt_ids]
    decoder.add(seqs[0])
    decoder.step()
    for seq in seqs[1:]:
        decoder.add(seq)
    while decoder.has_work:
        decoder.step()
    for seq, ids in zip(seqs, prompt_ids, strict=True):
        assert seq.generated == _hf_greedy(model, ids, stop, 12)


@pytest.mark.parametrize("name", list(_architectures(1)))
def test_rows_that_finish_early_leave_the_others_exact(name, encoder):
    """Prompts of different lengths whose replies end at different steps: each row that finishes is
    dropped from the batch (and padding columns no row needs any more with it) while the others go on
    -- on sliding-window caches too, whose layers keep their own count of the tokens they hold."""
    torch.manual_seed(0)
    model = _architectures(len(encoder.tokenizer))[name]().eval()
    model.generation_config.eos_token_id = None
    stop = StopCondition((), ())
    prompt_ids = [encoder.prompt_ids([Message("user", p)]) for p in PROMPTS[:4]]
    assert len({len(ids) for ids in prompt_ids}) > 1
    # The longest prompt ends first: the padding columns the others kept for it go then.
    longest_first = sorted(range(4), key=lambda i: -len(prompt_ids[i]))
    lengths = [0] * 4
    for rank, i in enumerate(longest_first):
        lengths[i] = 3 + 3 * rank
    decoder = Decoder(model, encoder.tokenizer, max_batch=4)
    seqs = [
        decoder.sequence(Request(ids, SamplingSettings(max_new_tokens=n), stop))
        for ids, n in zip(prompt_ids, lengths, strict=True)
    ]
    for seq in seqs:
        decoder.add(seq)
    while decoder.has_work:
        decoder.step()
    for seq, ids, n in zip(seqs, prompt_ids, lengths, strict=True):
        assert seq.generated == _hf_greedy(model, ids, stop, n)


def test_the_cache_goes_by_the_name_the_model_takes(model, encoder):
    """transformers 5.25 renamed forward's ``past_key_values`` to ``cache`` and warns at the old name (a
    warning that would show in `prefkit chat`'s terminal); the decoder passes it by the model's own name."""
    import inspect
    import warnings

    stop = stop_condition(model, encoder)
    decoder = Decoder(model, encoder.tokenizer)
    names = inspect.signature(model.forward).parameters
    assert decoder._cache_kwarg == ("cache" if "cache" in names else "past_key_values")
    decoder.add(
        decoder.sequence(Request(encoder.prompt_ids([Message("user", "hi")]), SamplingSettings(4), stop))
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        while decoder.has_work:
            decoder.step()


def test_sampling_settings_are_bounded_where_they_are_made(model):
    """Issue 25: settings that overflow the sampler (NaN for the whole batch, once) or torch's seeding."""
    assert default_settings(model, temperature=1e-40) == SamplingSettings()  # under 1e-5: greedy
    assert default_settings(model, temperature=1e-5).do_sample
    model.generation_config.do_sample = True
    model.generation_config.temperature = 1e-9  # a model's own config is held to the same rule
    try:
        assert not default_settings(model).do_sample
    finally:
        model.generation_config.do_sample = False
        model.generation_config.temperature = 1.0
    for bad, field in [
        ({"do_sample": True, "temperature": 1e-40}, "temperature"),
        ({"repetition_penalty": 1e-40}, "repetition_penalty"),
        ({"repetition_penalty": 11.0}, "repetition_penalty"),
        ({"seed": 2**64}, "seed"),
        ({"seed": -(2**63) - 1}, "seed"),
    ]:
        with pytest.raises(PrefkitError, match=field):
            SamplingSettings(**bad)
    for seed in (2**64 - 1, -(2**63)):
        torch.Generator().manual_seed(SamplingSettings(seed=seed).seed)  # the bounds are torch's own


def test_a_row_with_nan_logits_fails_alone():
    """next_tokens gives a RowFailure for the row that cannot be sampled, tokens for the others."""
    from types import SimpleNamespace

    from prefkit.infer.sampling import RowFailure, next_tokens

    logits = torch.tensor([[0.0, 2.0, 1.0], [float("nan"), 1.0, 0.0], [1.0, 0.0, 3.0], [0.0, 5.0, 0.0]])
    sampled = SamplingSettings(do_sample=True, seed=1)
    object.__setattr__(sampled, "temperature", 1e-40)  # forced past the checks: inf logits, NaN probabilities

    def seq(settings: SamplingSettings) -> SimpleNamespace:
        request = SimpleNamespace(settings=settings, prompt_ids=[0])
        return SimpleNamespace(request=request, generated=[], generator=torch.Generator().manual_seed(1))

    greedy = SamplingSettings()
    tokens = next_tokens(logits, [seq(greedy), seq(greedy), seq(greedy), seq(sampled)])
    assert tokens[0] == 1 and tokens[2] == 2
    assert isinstance(tokens[1], RowFailure) and isinstance(tokens[3], RowFailure)


def test_replies_that_cannot_be_sampled_are_an_error_not_empty_replies(tiny_model_dir, encoder):
    """A model whose logits are NaN (its output weight broken) ends every row with finish_reason "error":
    generate_replies, which eval and the quickstart score, says so instead of handing back empty
    replies to be scored."""
    from prefkit.infer.generate import generate_replies

    broken = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        broken.get_output_embeddings().weight.fill_(float("nan"))
    prompts = [[Message("user", "Hello there")], [Message("user", "Why?")]]
    with pytest.raises(PrefkitError, match=r"2 of 2 replies could not be generated \(the first, prompt 0"):
        generate_replies(broken, encoder, prompts, settings=SamplingSettings(max_new_tokens=4))
