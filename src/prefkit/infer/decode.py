"""The decode loop every reply goes through: continuous batching over one model, with a KV cache.

One :class:`Decoder` owns a model (only one thread may call :meth:`Decoder.step`). Sequences are
added at any time; each ``step``:

1. drops cancelled sequences (a client went away) and frees their rows;
2. admits waiting sequences up to ``max_batch`` and runs their prompts in one left-padded forward
   pass (prefill), sampling each one's first token;
3. merges the new rows into the running batch's KV cache: both sides are left-padded to the longer
   length (padding is masked, and rotary positions are already baked into the cached keys, so where
   a row sits in the cache does not matter);
4. decodes one token for every running sequence in one forward pass;
5. removes finished sequences from the cache and trims columns that are padding in every row.

A row whose next token cannot be chosen (non-finite logits or probabilities: :class:`RowFailure`) ends
with ``finish_reason`` ``"error"`` and its ``error`` set; the other rows of the step go on, so one
request's trouble never ends its batch neighbours' replies. (A failure of the whole forward pass, such
as running out of memory, still raises from :meth:`Decoder.step`.)

So a request that arrives while others are decoding joins them at the next step, and a short reply
leaves the batch without waiting for the long ones -- what makes 8 concurrent clients several times
faster in total than one at a time.

Each row may use its own LoRA adapter: a PeftModel with several named adapters is run with peft's
mixed-batch ``adapter_names=`` (the reserved name ``__base__`` runs the base model alone).

Models whose cache is not a plain per-layer key/value store (sliding-window or linear-attention
layers) cannot have rows merged safely; for them the decoder still batches, but new sequences are
admitted only when the running batch is empty. (Why not transformers' own continuous batching:
docs/serving.md.)
"""

from __future__ import annotations

import inspect
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from prefkit.infer.sampling import RowFailure, SamplingSettings, next_tokens
from prefkit.infer.stop import StopCondition
from prefkit.infer.textstream import TextStream

logger = logging.getLogger(__name__)


@dataclass
class Request:
    prompt_ids: list[int]
    settings: SamplingSettings = field(default_factory=SamplingSettings)
    stop: StopCondition = field(default_factory=lambda: StopCondition((), ()))
    adapter: str | None = None  # a loaded adapter's name, BASE_MODEL ("__base__") or None: the model as is
    max_length: int | None = None  # prompt + reply tokens at most (the context length)
    ignore_eos: bool = False  # keep going past stop ids (benchmarks that need fixed lengths)


class Sequence:
    """One request being decoded: its tokens, its text and why it ended."""

    def __init__(self, request: Request, tokenizer: Any, device: torch.device | str = "cpu") -> None:
        self.request = request
        self.generated: list[int] = []
        self.completion_tokens = 0  # generated tokens, the stop token included
        self.stream = TextStream(tokenizer, request.stop.strings)
        self.finish_reason: str | None = None  # "stop", "length", "cancelled" or "error"
        self.error: str | None = None  # why, when finish_reason is "error"
        self.cancelled = False  # set from any thread; the decoder drops the sequence at its next step
        self.generator: torch.Generator | None = None
        if request.settings.do_sample and request.settings.seed is not None:
            self.generator = torch.Generator(device=device).manual_seed(request.settings.seed)

    @property
    def text(self) -> str:
        return self.stream.text

    @property
    def prompt_tokens(self) -> int:
        return len(self.request.prompt_ids)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def cancel(self) -> None:
        self.cancelled = True


class Update(NamedTuple):
    """What one step produced for one sequence: new text, and whether the sequence ended."""

    seq: Sequence
    text: str
    finished: bool


def _left_pad(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _cache_kwarg(model: Any) -> str:
    """The name the model's forward takes its key/value cache by: ``cache`` since transformers 5.25, which
    still takes ``past_key_values`` with a warning (until 5.40); before, only ``past_key_values``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


class Decoder:
    def __init__(self, model: Any, tokenizer: Any, *, max_batch: int = 8, prefill_tokens: int = 4096) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.prefill_tokens = prefill_tokens  # padded prompt tokens per prefill pass, at most
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad or 0)
        self.device = next(model.parameters()).device
        self.is_peft = hasattr(model, "peft_config")
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None  # [rows, cached columns]: 1 for a token, 0 for padding
        self._cache_kwarg = _cache_kwarg(model)
        layers = DynamicCache(config=self._config()).layers
        self.can_join = all(type(layer) is DynamicLayer for layer in layers)
        if not self.can_join:
            logger.info("this model's cache has sliding-window or linear layers: batches run to the end")

    def _config(self) -> Any:
        config = self.model.config
        return config.get_text_config() if hasattr(config, "get_text_config") else config

    def sequence(self, request: Request) -> Sequence:
        return Sequence(request, self.tokenizer, self.device)

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    @torch.inference_mode()
    def step(self) -> list[Update]:
        updates = self._drop_cancelled()
        admitted = self._admit()
        if admitted:
            updates += self._prefill(admitted)
        if self.running:
            updates += self._decode()
        return updates

    # -- admission and cancellation ----------------------------------------------------------
    def _drop_cancelled(self) -> list[Update]:
        updates = []
        for seq in [s for s in self.waiting if s.cancelled]:
            self.waiting.remove(seq)
            seq.finish_reason = "cancelled"
            updates.append(Update(seq, "", True))
        gone = [i for i, s in enumerate(self.running) if s.cancelled]
        for i in gone:
            self.running[i].finish_reason = "cancelled"
            updates.append(Update(self.running[i], "", True))
        if gone:
            self._keep_rows([i for i, s in enumerate(self.running) if not s.cancelled])
        return updates

    def _admit(self) -> list[Sequence]:
        if not self.waiting or (self.running and not self.can_join):
            return []
        admitted: list[Sequence] = []
        width = 0
        while self.waiting and len(self.running) + len(admitted) < self.max_batch:
            width = max(width, self.waiting[0].prompt_tokens)
            if admitted and width * (len(admitted) + 1) > self.prefill_tokens:
                break  # the rest waits for the next step: one pass never holds too many prompt tokens
            admitted.append(self.waiting.popleft())
        return admitted

    # -- forward passes -------------------------------------------------------------------------
    def _forward(self, seqs: list[Sequence], input_ids: torch.Tensor, mask: torch.Tensor, cache: Any) -> Any:
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)[:, -input_ids.shape[1] :]
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": mask,
            "position_ids": position_ids,
            self._cache_kwarg: cache,
            "use_cache": True,
            "logits_to_keep": 1,
        }
        if self.is_peft:
            active = self.model.active_adapter
            names = [s.request.adapter or active for s in seqs]
            if any(name != active for name in names):
                kwargs["adapter_names"] = names
        return self.model(**kwargs).logits[:, -1, :]

    def _prefill(self, seqs: list[Sequence]) -> list[Update]:
        width = max(s.prompt_tokens for s in seqs)
        ids = [[self.pad_id] * (width - s.prompt_tokens) + s.request.prompt_ids for s in seqs]
        mask = [[0] * (width - s.prompt_tokens) + [1] * s.prompt_tokens for s in seqs]
        input_ids = torch.tensor(ids, device=self.device)
        mask_t = torch.tensor(mask, device=self.device)
        cache = DynamicCache(config=self._config())
        logits = self._forward(seqs, input_ids, mask_t, cache)
        updates = [
            self._accept(seq, token) for seq, token in zip(seqs, next_tokens(logits, seqs), strict=True)
        ]
        keep = [i for i, seq in enumerate(seqs) if not seq.finished]
        if keep:
            if len(keep) < len(seqs):
                cache.batch_select_indices(torch.tensor(keep, device=self.device))
                mask_t = mask_t[keep]
            self._merge(cache, mask_t)
            self.running += [seqs[i] for i in keep]
        return updates

    def _merge(self, cache: DynamicCache, mask: torch.Tensor) -> None:
        if self._cache is None or self._mask is None:
            self._cache, self._mask = cache, mask
            return
        width = max(self._mask.shape[1], mask.shape[1])
        for old, new in zip(self._cache.layers, cache.layers, strict=True):
            old.keys = torch.cat([_left_pad(old.keys, width, -2), _left_pad(new.keys, width, -2)])
            old.values = torch.cat([_left_pad(old.values, width, -2), _left_pad(new.values, width, -2)])
        self._mask = torch.cat([_left_pad(self._mask, width, -1), _left_pad(mask, width, -1)])

    def _decode(self) -> list[Update]:
        assert self._mask is not None
        seqs = self.running
        input_ids = torch.tensor([[s.generated[-1]] for s in seqs], device=self.device)
        self._mask = torch.cat([self._mask, self._mask.new_ones(len(seqs), 1)], dim=-1)
        logits = self._forward(seqs, input_ids, self._mask, self._cache)
        updates = [
            self._accept(seq, token) for seq, token in zip(seqs, next_tokens(logits, seqs), strict=True)
        ]
        if any(s.finished for s in seqs):
            self._keep_rows([i for i, s in enumerate(seqs) if not s.finished])
        return updates

    def _keep_rows(self, keep: list[int]) -> None:
        self.running = [self.running[i] for i in keep]
        if not keep:
            self._cache = self._mask = None
            return
        assert self._cache is not None and self._mask is not None
        self._cache.batch_select_indices(torch.tensor(keep, device=self.device))
        self._mask = self._mask[keep]
        first = int(self._mask.any(dim=0).int().argmax())  # leading columns that are padding everywhere
        # Only plain layers lose those columns: a sliding-window layer keeps its own count of the tokens it
        # has seen, which the next step's attention mask is sized from (a trimmed one no longer matches).
        if first > 0 and self.can_join:
            for layer in self._cache.layers:
                layer.keys = layer.keys[..., first:, :]
                layer.values = layer.values[..., first:, :]
            self._mask = self._mask[:, first:]

    # -- one token -------------------------------------------------------------------------------
    def _accept(self, seq: Sequence, token: int | RowFailure) -> Update:
        request = seq.request
        if isinstance(token, RowFailure):
            seq.finish_reason, seq.error = "error", token.reason
            return Update(seq, "", True)
        seq.completion_tokens += 1
        if token in request.stop.ids and not request.ignore_eos:
            seq.finish_reason = "stop"
            return Update(seq, seq.stream.flush(), True)
        seq.generated.append(token)
        text = seq.stream.push(token)
        if seq.stream.stopped:
            seq.finish_reason = "stop"
        elif len(seq.generated) >= request.settings.max_new_tokens or (
            request.max_length is not None and seq.prompt_tokens + len(seq.generated) >= request.max_length
        ):
            seq.finish_reason = "length"
        if seq.finished:
            text += seq.stream.flush()
        return Update(seq, text, seq.finished)
