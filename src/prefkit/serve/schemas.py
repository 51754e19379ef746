"""The request bodies the server accepts: OpenAI's chat and completions parameters, checked strictly.

Types are strict, as OpenAI's are ("5" is not an integer, 1.0 is not a count). Unknown keys are
ignored. Features prefkit does not implement (several choices, log-probs, tools, JSON mode, penalties
other than repetition_penalty) are refused with a 400 naming the parameter, never silently dropped.
vLLM's extensions ``top_k``, ``repetition_penalty`` and ``ignore_eos`` are accepted.

Sampling parameters are bounded to what decodes safely (:mod:`prefkit.infer.sampling`): a
``repetition_penalty`` outside [0.01, 10] or a ``seed`` outside 64 bits is a 400 naming it, never an
overflow in the decoder; a ``temperature`` under 1e-5 means greedy.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from prefkit.infer.sampling import MAX_REPETITION_PENALTY, MAX_SEED, MIN_REPETITION_PENALTY, MIN_SEED

MAX_STOP = 4  # stop sequences per request, as OpenAI allows
MAX_STOP_CHARS = 200


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    def unsupported(self) -> tuple[str, str] | None:
        """(parameter, why) for a feature the request asks for that prefkit does not implement."""
        return None


class TextPart(Strict):
    type: Literal["text"]
    text: str


class ChatMessage(Strict):
    # OpenAI's newer "developer" role is its name for the system message.
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(Strict):
    include_usage: bool = False


class _Sampling(Strict):
    """Parameters shared by chat and completions."""

    model: str = Field(min_length=1)
    max_tokens: int | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=-1)  # vLLM: -1 or 0 mean off
    repetition_penalty: float | None = Field(
        default=None, ge=MIN_REPETITION_PENALTY, le=MAX_REPETITION_PENALTY
    )
    seed: int | None = Field(default=None, ge=MIN_SEED, le=MAX_SEED)  # what torch's generators take
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: Any = None
    logit_bias: dict[str, Any] | None = None
    ignore_eos: bool = False
    user: str | None = None

    def stop_strings(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def unsupported(self) -> tuple[str, str] | None:
        """(parameter, why) for a feature this server does not implement, else None."""
        if self.n != 1:
            return "n", "only n=1 is supported: send one request per reply"
        if self.presence_penalty != 0 or self.frequency_penalty != 0:
            which = "presence_penalty" if self.presence_penalty != 0 else "frequency_penalty"
            return which, f"{which} is not supported; use repetition_penalty"
        if self.logprobs not in (None, False):
            return "logprobs", "log-probabilities are not supported"
        if self.logit_bias:
            return "logit_bias", "logit_bias is not supported"
        stops = self.stop_strings()
        if len(stops) > MAX_STOP:
            return "stop", f"at most {MAX_STOP} stop sequences"
        if any(not s or len(s) > MAX_STOP_CHARS for s in stops):
            return "stop", f"each stop sequence must be 1 to {MAX_STOP_CHARS} characters"
        return None


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None  # OpenAI's newer name for max_tokens
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None
    top_logprobs: int | None = None

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def unsupported(self) -> tuple[str, str] | None:
        if self.tools or self.functions or self.tool_choice not in (None, "none"):
            return "tools", "tool and function calling are not supported"
        if self.response_format and self.response_format.get("type") != "text":
            return "response_format", "only response_format type 'text' is supported"
        if self.top_logprobs:
            return "top_logprobs", "log-probabilities are not supported"
        return super().unsupported()


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    def unsupported(self) -> tuple[str, str] | None:
        if self.echo:
            return "echo", "echo is not supported"
        if self.suffix:
            return "suffix", "suffix (insertion) is not supported"
        if self.best_of not in (None, 1):
            return "best_of", "only best_of=1 is supported"
        return super().unsupported()


class ArenaBattleRequest(Strict):
    """``POST /ui/api/arena/battles``: a prompt for two unnamed models, and the sampling both use."""

    prompt: str | list[ChatMessage]
    prompt_index: int | None = Field(default=None, ge=0)  # drawn from --prompts (GET .../prompt's index)
    max_tokens: int | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = Field(default=None, ge=MIN_SEED, le=MAX_SEED)
    stream: bool = False


class ArenaVoteRequest(Strict):
    """``POST /ui/api/arena/battles/{id}/vote``."""

    winner: Literal["a", "b", "tie", "both_bad"]
    voter: str | None = Field(default=None, max_length=100)
