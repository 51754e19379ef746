"""`prefkit chat`: a multi-turn conversation with a model (and optionally a trained adapter) in the
terminal, rendered with the model's chat template, the reply streamed token by token.

Commands: ``/reset`` starts a new conversation (the system message stays), ``/system TEXT`` sets the
system message (``/system`` alone clears it), ``/exit`` (or Ctrl-D) leaves, ``/help`` lists them.
Ctrl-C while a reply is being written stops it; the part already shown stays in the conversation.

When the conversation no longer fits the model's context, the oldest exchanges are dropped (the
system message is kept) and the user is told.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from prefkit.data.examples import Message
from prefkit.errors import PrefkitError
from prefkit.infer.decode import Decoder, Request
from prefkit.infer.sampling import SamplingSettings
from prefkit.infer.stop import stop_condition
from prefkit.model.inference import LoadedModel

USER_PROMPT = "user> "
REPLY_PROMPT = "assistant> "
HELP = "commands: /reset (new conversation), /system TEXT (set the system message), /exit, /help"

# Control characters other than newline and tab would move the cursor or change the terminal's state
# (a model can write ESC sequences); they are shown as U+FFFD instead.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    return _CONTROL.sub("\ufffd", text)


@dataclass
class ChatSession:
    """One conversation with one model: history, system message, and streamed replies."""

    loaded: LoadedModel
    settings: SamplingSettings
    adapter: str | None = None
    system: str | None = None
    history: list[Message] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.encoder = self.loaded.encoder(self.adapter)
        self.decoder = Decoder(self.loaded.model, self.loaded.tokenizer, max_batch=1)
        self.stop = stop_condition(self.loaded.model, self.encoder)

    def reset(self) -> None:
        self.history.clear()

    def messages(self, history: list[Message]) -> list[Message]:
        return ([Message("system", self.system)] if self.system else []) + history

    def _fit(self, user_text: str) -> tuple[list[int], int]:
        """The prompt ids with the new user turn, dropping the oldest exchanges until the prompt and a
        full reply fit the context; and how many exchanges were dropped."""
        history = [*self.history, Message("user", user_text)]
        limit = self.loaded.context_length
        dropped = 0
        while True:
            ids = self.encoder.prompt_ids(self.messages(history))
            if limit is None or len(ids) + self.settings.max_new_tokens <= limit:
                return ids, dropped
            if len(history) <= 1:
                raise PrefkitError(
                    f"this message is {len(ids)} tokens with the system message; with a "
                    f"{self.settings.max_new_tokens}-token reply it does not fit the model's context of "
                    f"{limit} tokens"
                )
            history = history[2:]  # the oldest user turn and its reply
            dropped += 1

    def reply(self, user_text: str, on_text: Callable[[str], None]) -> tuple[str, int]:
        """Stream the model's reply to ``user_text`` through ``on_text``; returns the reply and how many
        old exchanges were dropped to fit the context. The exchange joins the history, also when
        interrupted (Ctrl-C): what was shown is what the conversation continues from."""
        ids, dropped = self._fit(user_text)
        if dropped:
            self.history = self.history[2 * dropped :]
        seq = self.decoder.sequence(
            Request(
                ids, self.settings, self.stop, adapter=self.adapter, max_length=self.loaded.context_length
            )
        )
        self.decoder.add(seq)
        try:
            while not seq.finished:
                for update in self.decoder.step():
                    if update.text:
                        on_text(update.text)
        except KeyboardInterrupt:
            seq.cancel()
            self.decoder.step()  # frees the sequence's cache row
            raise
        finally:
            if seq.finish_reason != "error":  # a reply that failed is no turn to continue from
                self.history += [Message("user", user_text), Message("assistant", seq.text)]
        if seq.finish_reason == "error":
            raise PrefkitError(f"the reply could not be generated: {seq.error}")
        return seq.text, dropped


def run_chat(
    session: ChatSession,
    *,
    read: Callable[[str], str] = input,
    out: TextIO = sys.stdout,
    banner: str = "",
) -> None:
    """The terminal loop: read a line, run a command or stream a reply, until /exit or end of input."""

    def write(text: str) -> None:
        out.write(text)
        out.flush()

    if banner:
        write(banner + "\n" + HELP + "\n")
    while True:
        try:
            line = read(USER_PROMPT)
        except EOFError:
            write("\n")
            return
        except KeyboardInterrupt:
            write("\n")
            continue
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            command, _, argument = text.partition(" ")
            if command in ("/exit", "/quit"):
                return
            if command == "/reset":
                session.reset()
                write("(new conversation)\n")
            elif command == "/system":
                session.system = argument.strip() or None
                write("(system message set)\n" if session.system else "(system message cleared)\n")
            elif command == "/help":
                write(HELP + "\n")
            else:
                write(f"(unknown command {command}; {HELP})\n")
            continue
        write(REPLY_PROMPT)
        try:
            _, dropped = session.reply(line, lambda piece: write(printable(piece)))
        except KeyboardInterrupt:
            write(" [stopped]\n")
            continue
        except PrefkitError as err:
            write(f"\n(error: {err})\n")
            continue
        write("\n")
        if dropped:
            write(f"(the {dropped} oldest exchange(s) were dropped to fit the model's context)\n")
