"""A pair that truncation leaves untrainable -- a reply with no tokens left, or chosen and rejected cut to the
same tokens -- is an unusable example named by file:line, never trained on as a constant loss."""

from __future__ import annotations

import json

import pytest

from prefkit.config import load_config
from prefkit.data.examples import ExampleError, Location, Message, PreferenceExample
from prefkit.data.load import check_data
from prefkit.data.sources import DataError
from prefkit.data.tokenize import ChatEncoder
from prefkit.model.loader import load_tokenizer
from prefkit.train.recipe import train

LONG_PROMPT = "Explain this carefully. " + "word " * 100
SHARED = "Here is a careful answer that begins the same way in both replies. " * 3


def pair(prompt: str, chosen: str, rejected: str) -> PreferenceExample:
    return PreferenceExample((Message("user", prompt),), chosen, rejected, Location("t.jsonl", 7))


def test_a_reply_cut_to_nothing_is_an_error(tokenizer):
    # LLaMA-Factory's policy shares a small budget in proportion: 20 * 15 / 444 tokens is 0 for the reply.
    with pytest.raises(ExampleError, match="cutoff_len 20 leaves nothing of the reply") as err:
        ChatEncoder(tokenizer, None, 20).encode_pair(pair(LONG_PROMPT, "A fine reply here.", "Bad reply."))
    assert err.value.kind == "too_long"
    assert ChatEncoder(tokenizer, None, 40).encode_pair(pair(LONG_PROMPT, "A fine reply here.", "Bad reply."))


def test_replies_cut_to_the_same_tokens_are_an_error(tokenizer):
    example = pair("Q?", SHARED + "Yes.", SHARED + "No.")
    with pytest.raises(ExampleError, match="chosen and rejected are the same") as err:
        ChatEncoder(tokenizer, None, 40).encode_pair(example)
    assert err.value.kind == "identical_after_truncation"
    encoded = ChatEncoder(tokenizer, None, 512).encode_pair(example)
    assert encoded.chosen_ids != encoded.rejected_ids


def test_data_check_and_training_name_them_and_skip_them(tmp_path, tiny_model_dir):
    rows = [{"prompt": f"Question {i}?", "chosen": f"Yes, {i}.", "rejected": "No."} for i in range(6)]
    rows[2] = {"prompt": LONG_PROMPT, "chosen": "A fine reply here.", "rejected": "Bad reply."}
    rows[4] = {"prompt": "Q?", "chosen": SHARED + "Yes.", "rejected": SHARED + "No."}
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    report = check_data([data], tokenizer=load_tokenizer(str(tiny_model_dir)), cutoff_len=20)
    assert [(str(p.location), p.kind) for p in report.errors] == [
        (f"{data}:3", "too_long"),
        (f"{data}:5", "identical_after_truncation"),
    ]
    common = [
        f"model_name_or_path={tiny_model_dir}",
        f"train_file={data}",
        "cutoff_len=20",
        "max_steps=1",
        "per_device_train_batch_size=2",
        "plot_loss=false",
    ]
    with pytest.raises(DataError, match=r"2 of 6 examples are unusable:\n.*pairs.jsonl:3: cutoff_len 20"):
        train(load_config(None, [*common, f"output_dir={tmp_path / 'a'}"]))
    result = train(load_config(None, [*common, f"output_dir={tmp_path / 'b'}", "on_bad_example=skip"]))
    record = json.loads((result.output_dir / "training_config.json").read_text())
    assert record["data"]["train_examples"] == 4 and len(record["data"]["skipped"]) == 2
