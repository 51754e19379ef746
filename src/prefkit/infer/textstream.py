"""Generated token ids -> text pieces, as they come, for streaming.

Two things make this more than ``tokenizer.decode`` of each new token:

* A character may span several tokens (byte-level BPE splits a Japanese character into bytes), and
  a token decoded alone may lose the space a tokenizer only writes between tokens (SentencePiece's
  ``▁``). So the newest tokens are decoded together with the one before them, and the difference is
  the new text; a piece that ends in an incomplete character (U+FFFD) waits for the next token.
* A stop string ("\\n\\nUser:", or an end-of-turn marker that is not one token) may arrive over several
  tokens. Text that could be the start of a stop string is held back until it either completes one
  (the reply ends before it) or can no longer (it is released).

The pieces joined are exactly the reply: streaming and non-streaming replies are the same text. A
reply cut off in the middle of a character (at ``max_tokens``) ends before that character.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_INCOMPLETE = "\ufffd"


class TextStream:
    def __init__(self, tokenizer: Any, stop_strings: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop_strings = tuple(s for s in stop_strings if s)
        self.ids: list[int] = []
        self._prefix_offset = 0  # ids[prefix:read] is the context the next piece is decoded against
        self._read_offset = 0
        self.text = ""  # all text decoded so far (held-back text included)
        self.emitted = 0  # characters of ``text`` handed out
        self.stopped = False  # a stop string was found; ``text`` ends before it

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def push(self, token: int) -> str:
        """Add one generated token; the text that can be shown now ('' while a character or a
        possible stop string is incomplete)."""
        if self.stopped:
            return ""
        self.ids.append(token)
        before = self._decode(self.ids[self._prefix_offset : self._read_offset])
        now = self._decode(self.ids[self._prefix_offset :])
        if len(now) <= len(before) or now.endswith(_INCOMPLETE):
            return ""  # no complete character yet
        self.text += now[len(before) :]
        self._prefix_offset, self._read_offset = self._read_offset, len(self.ids)
        return self._release()

    def _release(self) -> str:
        if self._cut_at_stop():
            return self.flush()
        end = len(self.text) - self._held_back()
        piece = self.text[self.emitted : end]
        self.emitted = max(self.emitted, end)
        return piece

    def _cut_at_stop(self) -> bool:
        # Text before ``emitted`` was never the start of a stop string (it would have been held back).
        found = [at for s in self.stop_strings if (at := self.text.find(s, self.emitted)) >= 0]
        if found:
            self.text = self.text[: min(found)]
            self.stopped = True
        return self.stopped

    def _held_back(self) -> int:
        """Length of the longest end of ``text`` that is the beginning of a stop string."""
        longest = 0
        for stop in self.stop_strings:
            for n in range(min(len(stop) - 1, len(self.text) - self.emitted), longest, -1):
                if self.text.endswith(stop[:n]):
                    longest = n
                    break
        return longest

    def flush(self) -> str:
        """Everything not yet handed out (at the end of the reply: held-back text that never became a
        stop string, or a last incomplete character)."""
        if not self.stopped and self._read_offset < len(self.ids):
            before = self._decode(self.ids[self._prefix_offset : self._read_offset])
            # A reply cut off (max_tokens) in the middle of a character ends before that character.
            self.text += self._decode(self.ids[self._prefix_offset :])[len(before) :].rstrip(_INCOMPLETE)
            self._prefix_offset = self._read_offset = len(self.ids)
            self._cut_at_stop()
        piece = self.text[self.emitted :]
        self.emitted = len(self.text)
        return piece
