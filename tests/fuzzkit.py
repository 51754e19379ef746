"""Hypothesis strategies for hostile inputs: data files in every format prefkit reads, configs, and
dataset_info.json files. Shared by tests/test_fuzz.py; ``PREFKIT_FUZZ_EXAMPLES`` sets how many inputs
each target gets (scripts/fuzz.py raises it for the long run)."""

from __future__ import annotations

import csv
import io
import json
import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("PREFKIT_FUZZ_EXAMPLES", "100"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("PREFKIT_FUZZ_RANDOM") != "1",  # CI: the same inputs every run
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

# What hostile data is made of: the keys formats read (and near misses), awkward strings, and JSON
# fragments Python's own encoder cannot produce (huge integers, lone surrogates, duplicate keys).
KEYS = [
    "prompt", "chosen", "rejected", "system", "messages", "conversations", "rejected_conversations",
    "instruction", "input", "output", "history", "role", "content", "from", "value",
    "sytem", "chosen\u200b", "Prompt", "", "id", "rejected ",
]  # fmt: skip
NASTY_TEXT = [
    "", " ", "\u200b", "\u200b\u200d\ufeff", "<|im_end|>", "<|im_start|>assistant\n", "[INST]", "</s>",
    "\x00", "\x1b[31m", "\r\n", "日本語", "🙂", "a" * 3000, "\\", '"', "{", "[1, 2]",
    '[{"role": "user", "content": "q"}]', "user", "assistant", "gpt", "human", "system", "tool",
]  # fmt: skip
RAW_FRAGMENTS = [
    "9" * 4400, "-" + "9" * 4400, '"\\ud800"', '"a\\udfffb"', "1e400", "NaN", "-Infinity", "true", "null",
    "[" * 50 + "]" * 50, '{"a": 1, "a": 2}', '{"role": "user", "role": "assistant", "content": "x"}',
]  # fmt: skip

texts = st.one_of(st.sampled_from(NASTY_TEXT), st.text(max_size=40))
roles = st.one_of(st.sampled_from(["user", "assistant", "system", "human", "gpt", "bot", "tool"]), texts)


def messages() -> st.SearchStrategy[list]:
    message = st.one_of(
        st.fixed_dictionaries({"role": roles, "content": texts}),
        st.fixed_dictionaries({"from": roles, "value": texts}),
        st.dictionaries(st.sampled_from(KEYS), texts, max_size=3),
        texts,
    )
    return st.lists(message, max_size=5)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.floats(), texts),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(texts, children, max_size=4)),
    max_leaves=12,
)
field_values = st.one_of(texts, messages(), json_values)
records = st.one_of(
    st.dictionaries(st.sampled_from(KEYS), field_values, max_size=6),
    json_values,
)


@st.composite
def record_text(draw) -> str:
    """One record as JSON text, sometimes with a raw fragment spliced in where a value goes."""
    record = draw(records)
    text = json.dumps(record, ensure_ascii=draw(st.booleans()))
    if isinstance(record, dict) and record and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(record)))
        fragment = draw(st.sampled_from(RAW_FRAGMENTS))
        text = text.replace(
            json.dumps(key) + ": ", json.dumps(key) + ": " + fragment + ", " + json.dumps(key) + ": ", 1
        )
    return text


@st.composite
def damaged(draw, text: str) -> str:
    """``text`` with up to three edits: a slice deleted, junk inserted, or the end cut off."""
    for _ in range(draw(st.integers(0, 3))):
        if not text:
            break
        at = draw(st.integers(0, len(text)))
        edit = draw(st.sampled_from(["delete", "insert", "truncate"]))
        if edit == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 20)) :]
        elif edit == "insert":
            junk = draw(
                st.sampled_from(['"', ",", "{", "}", "[", "]", ":", "\n", "\\", "\x00", "\ufeff", ",,"])
            )
            text = text[:at] + junk + text[at:]
        else:
            text = text[:at]
    return text


@st.composite
def jsonl_files(draw) -> bytes:
    lines = draw(st.lists(record_text(), max_size=8))
    text = draw(damaged("\n".join(lines) + draw(st.sampled_from(["\n", "", "\r\n"]))))
    data = text.encode("utf-8", errors="surrogatepass")
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data)))
        data = (
            data[:at]
            + draw(st.sampled_from([b"\xff", b"\xc3", b"\xef\xbb\xbf", b"\xed\xa0\x80"]))
            + data[at:]
        )
    return data


@st.composite
def json_files(draw) -> bytes:
    items = draw(st.lists(record_text(), max_size=8))
    separator = draw(st.sampled_from([",", ",\n", ",\n  "]))
    body = "[" + separator.join(items) + "]"
    if draw(st.booleans()):
        body = draw(st.sampled_from(['{"data": %s}', '{"meta": 1, "data": %s}', '{"a": %s, "b": []}'])) % body
    return draw(damaged(body)).encode("utf-8", errors="surrogatepass")


@st.composite
def csv_files(draw) -> bytes:
    header = draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=5))
    rows = draw(st.lists(st.lists(st.one_of(texts, record_text()), min_size=1, max_size=6), max_size=6))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return draw(damaged(buffer.getvalue())).encode("utf-8", errors="surrogatepass")


# Records that are well formed in one of the chat formats, so that the parsers' turn checks, the
# validator and the chat template -- not JSON errors -- decide: any order of roles (an assistant turn
# first, the same role twice), lone surrogates in any text, and system prompts given where prefkit reads
# them (the record's `system`, a leading system message) or where it does not (a key of a message).
chat_texts = st.one_of(texts, st.sampled_from(["\ud800", "a\udfffb", "ok \ud83d"]))
turn_roles = st.sampled_from(["user", "assistant", "system"])


@st.composite
def chat_message(draw, style: str, role: str | None = None) -> dict:
    role = role or draw(turn_roles)
    if style == "sharegpt":
        message = {"from": {"user": "human", "assistant": "gpt"}.get(role, role), "value": draw(chat_texts)}
    else:
        message = {"role": role, "content": draw(chat_texts)}
    if draw(st.integers(0, 7)) == 0:
        message["system"] = draw(chat_texts)  # not read: a message is role/content or from/value
    return message


@st.composite
def chat_records(draw) -> dict:
    shape = draw(st.sampled_from(["messages", "prompt-chat", "sharegpt", "sharegpt-sft", "sharegpt-pair"]))
    style = "sharegpt" if shape.startswith("sharegpt") else "openai"
    turns = draw(st.lists(chat_message(style), max_size=5))
    reply = chat_message(style, "assistant")
    text_or_reply = st.one_of(chat_texts, reply)
    if shape == "messages":
        record: dict = {"messages": [*turns, draw(reply)]}
    elif shape == "sharegpt-sft":
        record = {"conversations": [*turns, draw(reply)]}
    elif shape == "prompt-chat":
        prompt = draw(st.one_of(st.just(turns), chat_texts))  # a plain-text prompt is allowed
        record = {"prompt": prompt, "chosen": draw(text_or_reply), "rejected": draw(text_or_reply)}
    elif shape == "sharegpt":
        record = {"conversations": turns, "chosen": draw(text_or_reply), "rejected": draw(text_or_reply)}
    else:
        record = {"conversations": [*turns, draw(reply)], "rejected_conversations": [*turns, draw(reply)]}
    if draw(st.booleans()):
        record["system"] = draw(st.one_of(chat_texts, st.none()))
    return record


@st.composite
def chat_files(draw) -> bytes:
    records = draw(st.lists(chat_records(), min_size=1, max_size=6))
    text = "".join(json.dumps(r, ensure_ascii=draw(st.booleans())) + "\n" for r in records)
    return text.encode("utf-8", errors="surrogatepass")


data_files = st.one_of(
    st.tuples(st.just(".jsonl"), jsonl_files()),
    st.tuples(st.just(".json"), json_files()),
    st.tuples(st.just(".csv"), csv_files()),
    st.tuples(st.sampled_from([".jsonl", ".json", ".csv"]), st.binary(max_size=200)),
    st.tuples(st.just(".jsonl"), chat_files()),
)

# ----------------------------------------------------------------------------------------- configs

CONFIG_KEYS = [
    "learning_rate", "pref_beta", "pref_ftx", "val_size", "seed", "num_train_epochs", "lora_rank",
    "lora_target", "output_dir", "stage", "pref_loss", "dataset", "max_steps", "weight_decay", "optim",
    "resume_from_checkpoint", "report_to", "columns", "pref_bta", "evaluation_strategy", "use_unsloth",
    "training_arguments", "bf16", "cutoff_len", "model_name_or_path",
]  # fmt: skip
YAML_SCALARS = [
    ".inf", "-.inf", ".nan", "1e400", "1e-5", "0", "-1", "4294967296", "9" * 5000, "''", "~", "null",
    "yes", "no", "true", "[]", "{}", "[a, b]", "'x'", '"\\x00"', "\x1b", "\x00", "2024-13-45",
    "!!python/object:os.system", "&a [1, 2]", "*a", "*nope", "[[[[[[[[", "]]", "- a", "{a: *a}", "|\n  block",
    "1_000", "0x10", "sigmoid", "dpo",
    "{prompt: a, prompt: b}", "\n  prompt: q\n  chosen: c\n  prompt: r", "[{x: 1, x: 2}]",
]  # fmt: skip


@st.composite
def yaml_texts(draw) -> str:
    lines = []
    for _ in range(draw(st.integers(0, 8))):
        key = draw(st.one_of(st.sampled_from(CONFIG_KEYS), texts))
        value = draw(st.one_of(st.sampled_from(YAML_SCALARS), texts.map(json.dumps)))
        if draw(st.integers(0, 9)) == 0:
            depth = draw(st.integers(30, 400))
            value = "[" * depth + "]" * depth
        lines.append(f"{key}: {value}")
    if draw(st.integers(0, 6)) == 0:  # a billion laughs
        lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
        lines += [
            f"{k}: &{k} [{', '.join(['*' + p] * 9)}]" for p, k in zip("abcdefg", "bcdefgh", strict=True)
        ]
        lines.append("lora_target: *h")
    return draw(damaged("\n".join(lines) + "\n"))


overrides = st.lists(
    st.builds(
        "{}={}".format,
        st.one_of(st.sampled_from(CONFIG_KEYS), texts),
        st.one_of(st.sampled_from(YAML_SCALARS), texts),
    ),
    max_size=3,
)

# ------------------------------------------------------------------------------------ dataset_info

info_values = st.one_of(
    st.sampled_from(
        ["pairs.jsonl", "/", "../..", "/etc/passwd", "", ".", "missing.json", "sub", "pairs.jsonl/x"]
    ),
    json_values,
)
info_entries = st.dictionaries(
    st.sampled_from(["file_name", "formatting", "ranking", "columns", "tags", "hf_hub_url", "split"]),
    st.one_of(info_values, st.sampled_from(["alpaca", "sharegpt", ["alpaca"], True, False, 1])),
    max_size=5,
)


@st.composite
def dataset_infos(draw) -> str:
    info = draw(
        st.dictionaries(st.sampled_from(["d", "e", ""]), st.one_of(info_entries, json_values), max_size=3)
    )
    text = json.dumps(info)
    if draw(st.booleans()):
        text = text.replace("1", draw(st.sampled_from(RAW_FRAGMENTS)), 1)
    return draw(damaged(text))
