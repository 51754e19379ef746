"""The chunked log-prob computation equals the plain full-vocabulary one, in value and in gradient."""

from __future__ import annotations

import math

import pytest
import torch

from prefkit import logps
from prefkit.data.tokenize import IGNORE_INDEX


def naive(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    mask = labels != IGNORE_INDEX
    full = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    return full.gather(-1, labels.masked_fill(~mask, 0).unsqueeze(-1)).squeeze(-1) * mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("chunk", [7, 2**24])  # 7 elements: one position per chunk; 2**24: one chunk
def test_chunked_equals_full_in_value_and_gradient(monkeypatch, dtype, chunk):
    monkeypatch.setattr(logps, "CHUNK_ELEMENTS", chunk)
    torch.manual_seed(0)
    logits = (torch.randn(3, 5, 11, dtype=torch.float64) * 4).to(dtype).requires_grad_()
    labels = torch.randint(0, 11, (3, 5))
    labels[0, :2] = IGNORE_INDEX
    labels[2, :] = IGNORE_INDEX  # a row with nothing labelled
    weights = torch.randn(3, 5, dtype=torch.float64)

    ours, mask = logps.token_logps(logits, labels)
    (ours.double() * weights).sum().backward()
    grad_ours = logits.grad.clone()
    logits.grad = None
    ref = naive(logits, labels)
    (ref.double() * weights).sum().backward()

    tol = 1e-6 if dtype != torch.bfloat16 else 1e-2
    assert ours.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert torch.equal(mask, labels != IGNORE_INDEX)
    torch.testing.assert_close(ours.double(), ref.double(), atol=tol, rtol=tol)
    torch.testing.assert_close(grad_ours.double(), logits.grad.double(), atol=tol, rtol=tol)
    assert grad_ours.dtype == dtype
    assert torch.all(grad_ours[2] == 0) and torch.all(grad_ours[0, :2] == 0)


def test_gradcheck_float64():
    torch.manual_seed(1)
    logits = torch.randn(2, 4, 6, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[1, 2, IGNORE_INDEX, 5], [0, IGNORE_INDEX, 3, 3]])
    assert torch.autograd.gradcheck(lambda x: logps.token_logps(x, labels)[0], (logits,))


def test_sequence_logps_on_a_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64)
    input_ids = torch.randint(3, 100, (2, 9))
    labels = input_ids.clone()
    labels[0, :4] = IGNORE_INDEX  # row 1 is labelled from position 0, which nothing predicts
    labels[1, 7:] = IGNORE_INDEX
    attention_mask = torch.ones_like(input_ids)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    sums, counts, _ = logps.sequence_logps(model, batch)
    full = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
    expected = naive(full, labels[:, 1:]).sum(-1)
    torch.testing.assert_close(sums.double(), expected, atol=1e-5, rtol=1e-5)
    assert counts.tolist() == [5, 6]


def test_sequence_logps_reads_the_models_logits_without_a_copy(tiny_model_dir, monkeypatch):
    """The logits tensor is the largest of a step; slicing it to align with the labels would make the
    reshape below copy it whole. The labels are shifted instead."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    seen: dict[str, object] = {}
    model.register_forward_hook(lambda module, args, output: seen.update(model=output.logits.data_ptr()))
    plain = logps._label_logps

    def spy(logits, labels):
        seen.update(given=logits.data_ptr(), contiguous=logits.is_contiguous())
        return plain(logits, labels)

    monkeypatch.setattr(logps, "_label_logps", spy)
    input_ids = torch.randint(3, 100, (2, 9))
    labels = input_ids.clone()
    labels[:, :4] = IGNORE_INDEX
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}
    _, counts, _ = logps.sequence_logps(model, batch)
    assert seen["given"] == seen["model"] and seen["contiguous"]
    assert counts.tolist() == [5, 5]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_nonfinite_logits_at_unlabelled_positions_do_not_leak(dtype):
    """A padding position's logits can be NaN (attention with nothing to attend to); it carries no label,
    so neither the values nor the gradient may see it."""
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 11, dtype=torch.float64).to(dtype)
    logits[1, 3] = math.nan
    logits.requires_grad_()
    labels = torch.randint(0, 11, (2, 4))
    labels[1, 3] = IGNORE_INDEX
    values, _ = logps.token_logps(logits, labels)
    values.sum().backward()
    assert torch.isfinite(values).all() and values[1, 3] == 0
    assert torch.isfinite(logits.grad).all() and torch.all(logits.grad[1, 3] == 0)
