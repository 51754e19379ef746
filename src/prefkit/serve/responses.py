"""OpenAI's response bodies: the whole completion, and the server-sent-event chunks of a streamed one.

Chat streams open with a chunk carrying ``role: assistant``, then one chunk per piece of text, the last
with ``finish_reason``; completions send pieces only. With ``stream_options.include_usage`` every chunk
has ``usage: null`` and a last chunk with no choices carries the usage, as OpenAI does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from prefkit.serve.scheduler import Event


def sse(data: Any) -> bytes:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


SSE_DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True)
class Bodies:
    ident: str
    created: int
    model: str
    chat: bool
    include_usage: bool = False

    @property
    def _object(self) -> str:
        return "chat.completion.chunk" if self.chat else "text_completion"

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        chunk = {"id": self.ident, "object": self._object, "created": self.created, "model": self.model}
        chunk["choices"] = choices
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def opening(self) -> list[dict[str, Any]]:
        if not self.chat:
            return []
        choice = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
        return [self._chunk([{**choice, "logprobs": None}])]

    def piece(self, event: Event, finish: str | None) -> dict[str, Any]:
        if self.chat:
            delta = {"content": event.text} if event.text else {}
            choice = {"index": event.index, "delta": delta, "finish_reason": finish, "logprobs": None}
        else:
            choice = {"index": event.index, "text": event.text, "finish_reason": finish, "logprobs": None}
        return self._chunk([choice])

    def usage(self, usage: dict[str, int]) -> dict[str, Any]:
        chunk = self._chunk([])
        chunk["usage"] = usage
        return chunk

    def whole(self, texts: list[str], finish: list[str | None], usage: dict[str, int]) -> dict[str, Any]:
        if self.chat:
            choices = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": t},
                    "finish_reason": f,
                    "logprobs": None,
                }
                for i, (t, f) in enumerate(zip(texts, finish, strict=True))
            ]
        else:
            choices = [
                {"index": i, "text": t, "finish_reason": f, "logprobs": None}
                for i, (t, f) in enumerate(zip(texts, finish, strict=True))
            ]
        return {
            "id": self.ident,
            "object": "chat.completion" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": usage,
        }
