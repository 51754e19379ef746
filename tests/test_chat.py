"""`prefkit chat`: the real command in a pseudo-terminal, and the session's history and context rules."""

from __future__ import annotations

import os
import sys

import pexpect
import pytest

from prefkit.data.examples import Message
from prefkit.errors import PrefkitError
from prefkit.infer.chat import ChatSession, printable
from prefkit.infer.generate import generate
from prefkit.infer.sampling import SamplingSettings
from prefkit.model.adapters import parse_adapters
from prefkit.model.inference import load_for_inference

MAX_NEW = 12


@pytest.fixture(scope="module")
def loaded(tiny_model_dir, tiny_adapters):
    return load_for_inference(str(tiny_model_dir), parse_adapters([f"a={tiny_adapters['a']}"]), dtype="fp32")


def _expected(loaded, messages: list[Message], adapter: str | None = None) -> str:
    """What the model replies, greedily, through the library (the adapter active when asked for)."""
    model = loaded.model
    if adapter is None:
        with model.disable_adapter():
            return generate(
                model, loaded.encoder(), [messages], settings=SamplingSettings(max_new_tokens=MAX_NEW)
            )[0]
    return generate(
        model, loaded.encoder(adapter), [messages], settings=SamplingSettings(max_new_tokens=MAX_NEW)
    )[0]


def _reply(child: pexpect.spawn) -> str:
    child.expect_exact("assistant> ")
    child.expect_exact("\r\nuser> ")
    return child.before.replace("\r\n", "\n").strip()


@pytest.mark.slow
def test_chat_command_in_a_terminal(tiny_model_dir, tiny_adapters, loaded):
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "TERM": "dumb", "OMP_NUM_THREADS": "1"}
    command = [
        "-m", "prefkit", "chat", "--model", str(tiny_model_dir), "--adapter", str(tiny_adapters["a"]),
        "--dtype", "fp32", "--max-new-tokens", str(MAX_NEW),
    ]  # fmt: skip
    child = pexpect.spawn(sys.executable, command, env=env, encoding="utf-8", timeout=60)
    try:
        child.expect_exact("prefkit chat:")
        child.expect_exact("user> ")
        child.sendline("hello")
        first = _reply(child)
        history = [Message("user", "hello")]
        assert first == printable(_expected(loaded, history, "a"))
        # The same conversation through the library session: the command must say exactly what it says.
        session = ChatSession(loaded, SamplingSettings(max_new_tokens=MAX_NEW), adapter="a")
        session.reply("hello", lambda _: None)
        child.sendline("Tell me more")
        second = _reply(child)
        assert second == printable(session.reply("Tell me more", lambda _: None)[0]).strip()

        child.sendline("/system You answer in one word.")
        child.expect_exact("(system message set)")
        child.sendline("/reset")
        child.expect_exact("(new conversation)")
        child.expect_exact("user> ")
        child.sendline("hello")
        after_reset = _reply(child)
        system = [Message("system", "You answer in one word."), Message("user", "hello")]
        assert after_reset == printable(_expected(loaded, system, "a"))

        child.sendline("/nonsense")
        child.expect_exact("unknown command /nonsense")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_session_streams_and_keeps_history(loaded):
    session = ChatSession(loaded, SamplingSettings(max_new_tokens=MAX_NEW), adapter="a")
    pieces: list[str] = []
    reply, dropped = session.reply("hello", pieces.append)
    assert dropped == 0 and len(pieces) > 1 and "".join(pieces) == reply  # streamed, piece by piece
    assert session.history == [Message("user", "hello"), Message("assistant", reply)]
    session.reset()
    assert session.history == []


def test_old_turns_are_dropped_to_fit_the_context(loaded):
    small = type(loaded)(**{**loaded.__dict__, "context_length": 90})
    session = ChatSession(small, SamplingSettings(max_new_tokens=MAX_NEW), system="Be brief.")
    total_dropped = 0
    for turn in range(6):
        _, dropped = session.reply(f"question number {turn} about data science", lambda _: None)
        total_dropped += dropped
        ids = session.encoder.prompt_ids(session.messages(session.history))
        assert len(ids) <= 90
    assert total_dropped > 0
    assert session.history[-2] == Message("user", "question number 5 about data science")
    with pytest.raises(PrefkitError, match="does not fit"):
        session.reply("word " * 200, lambda _: None)


def test_printable_neutralises_terminal_control():
    assert printable("ok\x1b[2Jcleared\n\tdone\x07") == "ok\ufffd[2Jcleared\n\tdone\ufffd"


def test_loading_an_adapter_sets_off_no_deprecation_warning(tiny_model_dir, tiny_adapters, recwarn):
    """peft reads the model's deprecated is_gradient_checkpointing while wrapping it: a FutureWarning in
    every chat, serve, eval and export session unless prefkit keeps it out."""
    load_for_inference(str(tiny_model_dir), parse_adapters([f"a={tiny_adapters['a']}"]), dtype="fp32")
    assert not [w for w in recwarn if w.category is FutureWarning]
