"""Every batch layout gives the padded layout's per-sequence log-probs, in value and in gradient."""

from __future__ import annotations

import pytest
import torch
from tiny import FAMILIES, build_family

from prefkit.data.collate import PreferenceCollator, SharedPromptCollator
from prefkit.model import attention as attention_module
from prefkit.model.attention import IMPLEMENTATION, use_lean_attention
from prefkit.model.logps import sequence_logps


def _features(seed: int = 0) -> list[dict[str, list[int]]]:
    g = torch.Generator().manual_seed(seed)

    def ids(n: int) -> list[int]:
        return torch.randint(5, 400, (n,), generator=g).tolist()

    # Uneven lengths, a one-token reply, replies of different lengths, a one-token prompt.
    shapes = [(7, 5, 9), (3, 1, 4), (12, 6, 6), (1, 3, 2), (5, 8, 1)]
    return [{"prompt_ids": ids(p), "chosen_ids": ids(c), "rejected_ids": ids(r)} for p, c, r in shapes]


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def model(request, tmp_path_factory):
    """Every family the seeds use: GPT-2 (learned positions), Qwen2, Gemma 2 (soft-capping, sliding
    window), Llama."""
    from transformers import AutoModelForCausalLM

    path = build_family(request.param, tmp_path_factory.mktemp(request.param) / "model")
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def _run(model, batch):
    model.zero_grad()
    sums, counts, means = sequence_logps(model, batch)
    weights = torch.linspace(-1, 1, sums.shape[0])
    (sums * weights).sum().backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return sums.detach(), counts, means, grads


@pytest.mark.parametrize(
    "layout",
    [
        SharedPromptCollator(0),
        SharedPromptCollator(0, pack_length=40),
        SharedPromptCollator(0, pack_length=10**6),
    ],
    ids=["shared-prompt", "shared-prompt-packed", "one-row"],
)
@pytest.mark.parametrize("attention", ["default", "eager", IMPLEMENTATION])
def test_layout_equals_padded(model, layout, attention, monkeypatch):
    """The padded layout runs the model's own attention; the other layout runs ``attention`` (prefkit's
    lean attention is what training on a CPU uses for sdpa models)."""
    default = model.config._attn_implementation  # sdpa, or eager where the family needs it (Gemma 2)
    features = _features()
    padded = _run(model, PreferenceCollator(0)(features))
    lean_calls: list[int] = []
    if attention == IMPLEMENTATION:
        if not use_lean_attention(model):
            pytest.skip(f"{default} attention stays as it is")
        lean = attention_module.masked_attention
        monkeypatch.setattr(attention_module, "masked_attention", lambda *a: lean_calls.append(1) or lean(*a))
    elif attention != "default":
        model.config._attn_implementation = attention
    try:
        other = _run(model, layout(features))
    finally:
        model.config._attn_implementation = default
    # The lean attention itself ran, in every layer (not transformers' sdpa in its place).
    assert len(lean_calls) == (model.config.num_hidden_layers if attention == IMPLEMENTATION else 0)
    torch.testing.assert_close(other[0], padded[0], atol=1e-5, rtol=1e-5)
    assert torch.equal(other[1], padded[1])
    torch.testing.assert_close(other[2], padded[2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(other[3], padded[3], atol=1e-5, rtol=1e-4)


def test_packing_fills_rows():
    features = _features()
    batch = SharedPromptCollator(0, pack_length=40)(features)
    lengths = [len(f["prompt_ids"]) + len(f["chosen_ids"]) + len(f["rejected_ids"]) for f in features]
    assert batch["input_ids"].shape[0] < len(features)
    assert batch["input_ids"].shape[1] <= max(40, max(lengths))
    # Every token of every pair is in the batch once; padding is what is left.
    real = int((batch["attention_mask"][:, 0].diagonal(dim1=1, dim2=2) & (batch["input_ids"] != 0)).sum())
    assert real == sum(lengths)


def test_packing_computes_the_fewest_positions_it_can_find():
    """Pairs of 25, 20, 15 and 20 tokens in rows of 40: in order they would take 3 rows of 35 positions
    (25 | 20 + 15 | 20); longest first, 2 rows of 40 (25 + 15 | 20 + 20)."""

    def pair(size: int) -> dict[str, list[int]]:
        return {"prompt_ids": [7] * (size - 4), "chosen_ids": [8, 9], "rejected_ids": [10, 11]}

    features = [pair(n) for n in (25, 20, 15, 20)]
    batch = SharedPromptCollator(0, pack_length=40)(features)
    assert tuple(batch["input_ids"].shape) == (2, 40)
    assert int((batch["input_ids"] != 0).sum()) == 80  # every token placed once, no padding
