"""Batched generation from chat prompts (used by evaluation and the quickstart; chat builds on it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from prefkit.data.examples import Message
from prefkit.data.tokenize import ChatEncoder


@torch.no_grad()
def generate(
    model: Any,
    encoder: ChatEncoder,
    prompts: Sequence[Sequence[Message]],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 8,
) -> list[str]:
    """Greedy replies to each prompt, decoded without special tokens. Prompts are left-padded into
    batches; a reply ends at the tokenizer's EOS (the chat template's end of turn) or at max_new_tokens."""
    tokenizer = encoder.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    replies: list[str] = []
    for start in range(0, len(prompts), batch_size):
        rows = [encoder.prompt_ids(p) for p in prompts[start : start + batch_size]]
        width = max(len(r) for r in rows)
        input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
        attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=tokenizer.eos_token_id,
        )
        for row in output[:, width:]:
            replies.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    model.train(was_training)
    return replies
