"""Chat-template rendering, prompt masking and the truncation policy.

How an example becomes token ids
--------------------------------
The conversation is rendered with the chat template (the tokenizer's own, or a named one) and cut
into segments at each assistant turn: everything before a reply, up to and including the template's
generation header (``<|im_start|>assistant\\n``), is *prompt*; the reply with the template's
end-of-turn tokens is *response*. Only response tokens are trained (labels -100 elsewhere). Each
segment is tokenised on its own with ``add_special_tokens=False`` -- the template already renders any
BOS it wants, so the tokenizer must not add a second one; if the tokenizer normally adds a BOS and the
template renders none, prefkit prepends one, as the model saw in pre-training.

Truncation policy (``cutoff_len``)
----------------------------------
Prompt and responses share the budget, as in LLaMA-Factory (``infer_seqlen``): a response shorter than
half the budget is kept whole; else, a prompt shorter than half the budget is kept whole and the
response gets the rest; else both are cut in proportion to their lengths. For preference pairs the
response length is the longer of chosen and rejected, and both are cut to the same length (trimmed
alike, so neither side wins by length alone). The *start* of the prompt is kept (its instructions and
system message), and so is the template's generation header at its end, so a truncated prompt still
hands over to the assistant the way the model expects. A ``cutoff_len`` too small to hold the header
and one response token makes the example unusable (an error naming it), never a silent drop.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prefkit.data.examples import ExampleError, Message, PreferenceExample, SFTExample
from prefkit.data.templates import ConversationRejected, TemplateError, resolve_template

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100


def infer_seqlen(source_len: int, target_len: int, cutoff_len: int) -> tuple[int, int]:
    """How many source (prompt) and target (response) tokens to keep within ``cutoff_len``."""
    if target_len * 2 < cutoff_len:
        max_target = cutoff_len
    elif source_len * 2 < cutoff_len:
        max_target = cutoff_len - source_len
    else:
        max_target = int(cutoff_len * target_len / (source_len + target_len))
    new_target = min(max_target, target_len)
    new_source = min(max(cutoff_len - new_target, 0), source_len)
    return new_source, new_target


@dataclass(frozen=True)
class Segment:
    """One prompt part (body + generation header) and the response that follows it."""

    body: list[int]
    header: list[int]
    response: list[int]


@dataclass
class EncodedPair:
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    # Lengths before truncation, for reports.
    full_prompt_len: int
    full_chosen_len: int
    full_rejected_len: int
    example_id: str = ""  # where the example came from ("data.jsonl:17"), for messages about a batch

    @property
    def truncated(self) -> bool:
        return (
            len(self.prompt_ids) < self.full_prompt_len
            or len(self.chosen_ids) < self.full_chosen_len
            or len(self.rejected_ids) < self.full_rejected_len
        )

    def to_features(self) -> dict[str, Any]:
        return {
            "prompt_ids": self.prompt_ids,
            "chosen_ids": self.chosen_ids,
            "rejected_ids": self.rejected_ids,
            "example_id": self.example_id,
            # The longest row the pair makes in the padded layout: what `train_sampling_strategy:
            # group_by_length` groups by (transformers' sampler reads a "length" column).
            "length": len(self.prompt_ids) + max(len(self.chosen_ids), len(self.rejected_ids)),
        }


@dataclass
class EncodedSFT:
    input_ids: list[int]
    labels: list[int]
    full_len: int  # before truncation
    full_response_len: int
    example_id: str = ""

    def to_features(self) -> dict[str, Any]:
        return {"input_ids": self.input_ids, "labels": self.labels, "example_id": self.example_id}


class ChatEncoder:
    """Renders and tokenises conversations for one tokenizer and template, then truncates them."""

    def __init__(self, tokenizer: Any, template: str | None = None, cutoff_len: int = 2048) -> None:
        self.tokenizer = tokenizer
        self.cutoff_len = cutoff_len
        self.chat_template = resolve_template(template)
        if self.chat_template is None and not getattr(tokenizer, "chat_template", None):
            raise TemplateError(
                f"the tokenizer of '{getattr(tokenizer, 'name_or_path', '?')}' has no chat template: "
                "set `template:` to one of chatml, llama3, qwen, gemma, mistral"
            )
        self._bos_prefix = self._implicit_bos()
        self._warned_double_bos = False

    # -- rendering ---------------------------------------------------------------------------
    def render(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
        from jinja2.exceptions import TemplateError as JinjaTemplateError

        try:
            return self.tokenizer.apply_chat_template(
                [m.to_dict() for m in messages],
                chat_template=self.chat_template,
                add_generation_prompt=add_generation_prompt,
                tokenize=False,
            )
        except JinjaTemplateError as err:  # the template's own raise_exception(...)
            raise ConversationRejected(str(err)) from err

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _implicit_bos(self) -> list[int]:
        """[bos] when the tokenizer adds BOS by itself but the template does not render one."""
        bos = self.tokenizer.bos_token_id
        if bos is None:
            return []
        adds_bos = self.tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [bos]
        rendered = self.render([Message("user", "a")])
        if adds_bos and not rendered.startswith(self.tokenizer.bos_token or "\0"):
            return [bos]
        return []

    def segments(self, messages: Sequence[Message]) -> list[Segment]:
        """Cut a conversation at each assistant turn (see module docstring)."""
        out: list[Segment] = []
        done = ""  # text already assigned to a segment
        for i, message in enumerate(messages):
            if message.role != "assistant":
                continue
            before = self.render(messages[:i], add_generation_prompt=False) if i else ""
            with_header = self.render(messages[:i], add_generation_prompt=True)
            through = self.render(messages[: i + 1], add_generation_prompt=False)
            if not (
                with_header.startswith(done)
                and with_header.startswith(before)
                and through.startswith(with_header)
            ):
                raise TemplateError(
                    "the chat template renders earlier turns differently once later turns are added "
                    "(it may strip reasoning from past replies), so prompt tokens cannot be masked "
                    "reliably; set `template:` to a named template"
                )
            body_text = with_header[len(done) : len(before)] if len(before) > len(done) else ""
            header_text = with_header[max(len(before), len(done)) :]
            out.append(
                Segment(self._ids(body_text), self._ids(header_text), self._ids(through[len(with_header) :]))
            )
            done = through
        if out and self._bos_prefix:
            first = out[0]
            out[0] = Segment(self._bos_prefix + first.body, first.header, first.response)
        self._check_double_bos(out)
        return out

    def _check_double_bos(self, segments: list[Segment]) -> None:
        bos = self.tokenizer.bos_token_id
        if bos is None or not segments or self._warned_double_bos:
            return
        first = (segments[0].body + segments[0].header)[:2]
        if first == [bos, bos]:
            self._warned_double_bos = True
            logger.warning(
                "every sequence starts with two BOS tokens (%s): the chat template renders one and the "
                "text or template adds another; models trained this way degrade -- check `template:`",
                self.tokenizer.bos_token,
            )

    # -- truncation ----------------------------------------------------------------------------
    def _fit(self, segment: Segment, target_len: int, budget: int) -> tuple[int, int]:
        """(prompt tokens, response tokens) to keep, always keeping the generation header."""
        header = len(segment.header)
        source_len = len(segment.body) + header
        if budget < header + 1:
            raise ExampleError(
                f"cutoff_len {self.cutoff_len} leaves no room for a reply: the prompt's assistant header "
                f"alone is {header} tokens",
                kind="too_long",
            )
        keep_source, keep_target = infer_seqlen(source_len, target_len, budget)
        if keep_source < header:
            keep_source = header
            keep_target = min(target_len, budget - header)
        return keep_source, keep_target

    @staticmethod
    def _prompt(segment: Segment, keep: int) -> list[int]:
        """The first tokens of the body and the whole header, ``keep`` tokens in all."""
        body_keep = keep - len(segment.header)
        return segment.body[:body_keep] + segment.header

    # -- public ---------------------------------------------------------------------------------
    def _final_reply(self, messages: Sequence[Message]) -> Segment:
        """The last assistant turn as the response; everything before it (earlier replies too) is prompt."""
        *history, last = self.segments(messages)
        earlier = [t for s in history for t in (*s.body, *s.header, *s.response)]
        return Segment(earlier + last.body, last.header, last.response)

    def encode_pair(self, example: PreferenceExample) -> EncodedPair:
        c = self._final_reply(example.chosen_messages())
        r = self._final_reply(example.rejected_messages())
        if c.body + c.header != r.body + r.header:
            raise TemplateError(
                "chosen and rejected render different prompts: the chat template looks at the reply "
                "when rendering the prompt"
            )
        target_len = max(len(c.response), len(r.response))
        keep_source, keep_target = self._fit(c, target_len, self.cutoff_len)
        chosen, rejected = c.response[:keep_target], r.response[:keep_target]
        self._check_trainable(
            chosen, rejected, len(c.body) + len(c.header), target_len, c.response == r.response
        )
        return EncodedPair(
            prompt_ids=self._prompt(c, keep_source),
            chosen_ids=chosen,
            rejected_ids=rejected,
            full_prompt_len=len(c.body) + len(c.header),
            full_chosen_len=len(c.response),
            full_rejected_len=len(r.response),
            example_id=str(example.location),
        )

    def _check_trainable(
        self, chosen: list[int], rejected: list[int], prompt_len: int, reply_len: int, same_replies: bool
    ) -> None:
        """A truncated pair must still teach something: both replies keep tokens and differ. Else its loss is
        a constant with no gradient -- an unusable example, never a silent one."""
        if not chosen or not rejected:
            raise ExampleError(
                f"cutoff_len {self.cutoff_len} leaves nothing of the reply: the prompt is {prompt_len} "
                f"tokens and the longer reply {reply_len}; raise cutoff_len or shorten the prompt",
                kind="too_long",
            )
        if same_replies:
            raise ExampleError(
                "chosen and rejected are the same tokens: the pair teaches nothing", kind="identical_pair"
            )
        if chosen == rejected:
            raise ExampleError(
                f"truncated to cutoff_len {self.cutoff_len}, chosen and rejected are the same {len(chosen)} "
                "tokens (they differ only further on), so the pair teaches nothing; raise cutoff_len",
                kind="identical_after_truncation",
            )

    def encode_sft(self, example: SFTExample) -> EncodedSFT:
        """input_ids and labels (-100 on every token that is not an assistant reply)."""
        input_ids: list[int] = []
        labels: list[int] = []
        budget = self.cutoff_len
        segments = self.segments(example.messages)
        for segment in segments:
            if budget <= len(segment.header):
                break  # later turns do not fit; earlier ones are kept whole
            keep_source, keep_target = self._fit(segment, len(segment.response), budget)
            prompt = self._prompt(segment, keep_source)
            response = segment.response[:keep_target]
            input_ids += prompt + response
            labels += [IGNORE_INDEX] * len(prompt) + response
            budget -= len(prompt) + len(response)
        if not any(label != IGNORE_INDEX for label in labels):
            raise ExampleError("no assistant reply left to train on after truncation", kind="too_long")
        return EncodedSFT(
            input_ids=input_ids,
            labels=labels,
            full_len=sum(len(s.body) + len(s.header) + len(s.response) for s in segments),
            full_response_len=sum(len(s.response) for s in segments),
            example_id=str(example.location),
        )

    def prompt_ids(self, prompt: Sequence[Message]) -> list[int]:
        """Token ids of a prompt ready for generation (for evaluation and chat)."""
        return self._bos_prefix + self._ids(self.render(prompt, add_generation_prompt=True))

    @functools.cached_property
    def end_of_turn(self) -> str:
        """The text the template closes an assistant reply with (``<|im_end|>``, ``<end_of_turn>``,
        ``<|eot_id|>``, ``</s>``), found by rendering a short exchange; '' when it closes with nothing."""
        reply = "\u2063reply\u2063"  # a marker no template adds by itself
        rendered = self.render([Message("user", "hi"), Message("assistant", reply)])
        after = rendered[rendered.index(reply) + len(reply) :] if reply in rendered else ""
        return after.strip()
