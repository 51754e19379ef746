"""The chunked log-prob computations -- from the model's logits, and fused with the output layer from its
hidden states -- equal the plain full-vocabulary log-softmax, in value and in gradient."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import FAMILIES, build_family

from prefkit.data.tokenize import IGNORE_INDEX
from prefkit.model import log_softmax, logps
from prefkit.model.output_layer import head_logps


def _label_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """label_logps at every position of (B, T, V) logits: 0 where unlabelled; and the labelled mask."""
    mask = labels != IGNORE_INDEX
    values, _ = logps.label_logps(
        logits.reshape(-1, logits.shape[-1]), labels.masked_fill(~mask, 0).reshape(-1)
    )
    return torch.where(mask, values.view(mask.shape), 0), mask


def naive(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    mask = labels != IGNORE_INDEX
    full = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    return full.gather(-1, labels.masked_fill(~mask, 0).unsqueeze(-1)).squeeze(-1) * mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("block", [11, 2**19])  # 11 elements: one position per block; 2**19: one block
def test_chunked_equals_full_in_value_and_gradient(monkeypatch, dtype, block):
    monkeypatch.setattr(log_softmax, "BLOCK_ELEMENTS", block)
    torch.manual_seed(0)
    logits = (torch.randn(3, 5, 11, dtype=torch.float64) * 4).to(dtype).requires_grad_()
    given = logits.detach().clone()
    labels = torch.randint(0, 11, (3, 5))
    labels[0, :2] = IGNORE_INDEX
    labels[2, :] = IGNORE_INDEX  # a row with nothing labelled
    weights = torch.randn(3, 5, dtype=torch.float64)

    ours, mask = _label_logps(logits, labels)
    (ours.double() * weights).sum().backward()
    assert torch.equal(logits.detach(), given)  # the model's logits are read, never written
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
    assert torch.autograd.gradcheck(lambda x: _label_logps(x, labels)[0], (logits,))


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
    """Where the output layer cannot be fused (a wrapped layer), the logits are the largest tensor of a
    step: the output layer runs at the predicting positions only, and what it returns is read in place,
    never sliced or copied."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    monkeypatch.setattr(logps, "plain_output_layer", lambda model: None)
    seen: dict[str, object] = {}
    model.register_forward_hook(lambda module, args, output: seen.update(model=output.logits.data_ptr()))
    plain = logps.label_logps

    def spy(logits, targets):
        seen.update(given=logits.data_ptr(), contiguous=logits.is_contiguous(), rows=logits.shape[0])
        return plain(logits, targets)

    monkeypatch.setattr(logps, "label_logps", spy)
    input_ids = torch.randint(3, 100, (2, 9))
    labels = input_ids.clone()
    labels[:, :4] = IGNORE_INDEX
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}
    _, counts, _ = logps.sequence_logps(model, batch)
    assert seen["given"] == seen["model"] and seen["contiguous"]
    assert seen["rows"] == 10  # the 5 + 5 positions that predict a labelled token, no others
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
    values, _ = _label_logps(logits, labels)
    values.sum().backward()
    assert torch.isfinite(values).all() and values[1, 3] == 0
    assert torch.isfinite(logits.grad).all() and torch.all(logits.grad[1, 3] == 0)


def _plain_head_logps(hidden, weight, targets, softcap):
    logits = hidden @ weight.t()
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    full = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    return full.gather(-1, targets.unsqueeze(-1)).squeeze(-1), logits.float().mean(-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("chunk", [7, 2**24])
@pytest.mark.parametrize("block", [22, 2**19])  # 22 elements: the softmax two rows at a time
@pytest.mark.parametrize("softcap", [None, 3.0])
@pytest.mark.parametrize("train_weight", [False, True], ids=["frozen-weight", "trained-weight"])
def test_fused_output_layer_equals_plain(monkeypatch, dtype, chunk, block, softcap, train_weight):
    """Both backward paths (the hidden-state gradient precomputed for a frozen weight; each chunk
    recomputed for a trained one), with and without Gemma 2's soft-capping, one row or all per chunk, the
    chunk's softmax taken all at once or a few rows at a time."""
    monkeypatch.setattr(log_softmax, "BLOCK_ELEMENTS", block)
    torch.manual_seed(0)
    hidden = (torch.randn(6, 4, dtype=torch.float64) * 2).to(dtype).requires_grad_()
    weight = torch.randn(11, 4, dtype=torch.float64).to(dtype).requires_grad_(train_weight)
    targets = torch.randint(0, 11, (6,))
    weights = torch.randn(6, dtype=torch.float64)
    weights[2] = 0  # a row that gets no gradient

    ours, our_means = head_logps(hidden, weight, targets, softcap, dtype, chunk)
    (ours.double() * weights).sum().backward()
    ours_grads = [hidden.grad.clone()] + ([weight.grad.clone()] if train_weight else [])
    hidden.grad = weight.grad = None
    ref, ref_means = _plain_head_logps(hidden, weight, targets, softcap)
    (ref.double() * weights).sum().backward()
    ref_grads = [hidden.grad] + ([weight.grad] if train_weight else [])

    tol = 1e-6 if dtype != torch.bfloat16 else 2e-2
    assert ours.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    torch.testing.assert_close(ours.double(), ref.double(), atol=tol, rtol=tol)
    torch.testing.assert_close(our_means.double(), ref_means.double(), atol=tol, rtol=tol)
    for mine, theirs in zip(ours_grads, ref_grads, strict=True):
        assert mine.dtype == dtype
        torch.testing.assert_close(mine.double(), theirs.double(), atol=tol, rtol=tol)
    assert torch.all(ours_grads[0][2] == 0)


@pytest.mark.parametrize("softcap", [None, 2.0])
def test_fused_output_layer_gradcheck(softcap):
    torch.manual_seed(2)
    hidden = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([0, 6, 3, 3, 1])
    frozen = weight.detach()
    assert torch.autograd.gradcheck(
        lambda h: head_logps(h, frozen, targets, softcap, torch.float64, 8)[0], (hidden,)
    )
    assert torch.autograd.gradcheck(
        lambda h, w: head_logps(h, w, targets, softcap, torch.float64, 8)[0], (hidden, weight)
    )


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("train_head", [False, True], ids=["frozen-head", "trained-head"])
def test_sequence_logps_fused_equals_the_models_logits(family, train_head, tmp_path, monkeypatch):
    """Every family the seeds use (Gemma 2 soft-caps its logits) takes the fused path, and it gives what
    the model's own logits give, for every parameter's gradient, the output layer frozen (as under LoRA)
    or trained (full fine-tuning; tied to the input embedding in GPT-2, Qwen2 and Gemma)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(build_family(family, tmp_path / "m"), dtype=torch.float64)
    model.get_output_embeddings().weight.requires_grad_(train_head)
    assert logps.plain_output_layer(model) is model.get_output_embeddings()
    torch.manual_seed(0)
    input_ids = torch.randint(5, 300, (3, 10))
    labels = input_ids.clone()
    labels[:, :4] = IGNORE_INDEX
    labels[2, 8:] = IGNORE_INDEX
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}

    def run():
        model.zero_grad()
        sums, counts, means = logps.sequence_logps(model, batch)
        (sums * torch.tensor([1.0, -0.5, 2.0], dtype=sums.dtype)).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return sums.detach(), counts, means, grads

    fused = run()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    assert (softcap is not None) == (family == "gemma")
    monkeypatch.setattr(logps, "plain_output_layer", lambda model: None)
    plain = run()
    assert getattr(model.config, "final_logit_softcapping", None) == softcap  # restored
    torch.testing.assert_close(fused[0], plain[0], atol=1e-9, rtol=1e-9)
    assert torch.equal(fused[1], plain[1])
    torch.testing.assert_close(fused[2], plain[2], atol=1e-9, rtol=1e-9)
    assert fused[3].keys() == plain[3].keys() and fused[3]
    for name, grad in plain[3].items():
        torch.testing.assert_close(fused[3][name], grad, atol=1e-9, rtol=1e-9, msg=name)


def test_a_model_that_scales_its_logits_takes_the_logits_path():
    """Granite divides its logits by ``logits_scaling`` after the output layer: fusing would skip that."""
    from transformers import GraniteConfig, GraniteForCausalLM

    torch.manual_seed(0)
    config = GraniteConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        logits_scaling=4.0,
    )
    model = GraniteForCausalLM(config).double()
    assert logps.plain_output_layer(model) is None
    input_ids = torch.randint(0, 64, (2, 6))
    labels = input_ids.clone()
    labels[:, :2] = IGNORE_INDEX
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}
    sums, counts, _ = logps.sequence_logps(model, batch)
    logits = model(input_ids=input_ids).logits[:, :-1].log_softmax(-1)
    picked = logits.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)[:, 1:]
    torch.testing.assert_close(sums, picked.sum(-1), atol=1e-10, rtol=1e-10)
    assert counts.tolist() == [4, 4]


def test_fused_path_keeps_no_logits(tiny_model_dir):
    """No tensor autograd saves has the vocabulary's width: the output layer's gradient needs none."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.get_output_embeddings().weight.requires_grad_(False)
    vocab = model.config.vocab_size
    input_ids = torch.randint(3, 100, (2, 12))
    labels = input_ids.clone()
    labels[:, :3] = IGNORE_INDEX
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}
    widths: list[tuple[int, ...]] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: widths.append(tuple(t.shape)) or t, lambda t: t):
        sums, _, _ = logps.sequence_logps(model, batch)
    assert widths and not [s for s in widths if s and s[-1] == vocab]
    sums.sum().backward()
    assert model.model.layers[0].mlp.up_proj.weight.grad is not None


def test_a_trained_untied_output_layer_under_ddp_takes_the_logits_path(tiny_model_dir, tmp_path):
    """DDP reduces the gradients of what its forward used: a trained output weight used outside it (the
    fused path) would be counted twice. Also when torch_compile wraps the DDP model."""
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM

    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)  # untied
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
        for outer in (wrapped, torch.compile(wrapped, backend="eager")):
            assert logps.plain_output_layer(outer) is None
        model.get_output_embeddings().weight.requires_grad_(False)  # frozen, as under LoRA: fused
        assert logps.plain_output_layer(wrapped) is model.get_output_embeddings()
    finally:
        dist.destroy_process_group()
