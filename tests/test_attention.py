"""prefkit's attention under a ready-made mask equals plain softmax attention in value and gradient, is as
accurate in bf16 as torch's SDPA, and leaves every other case to transformers' sdpa."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from prefkit.model import attention as attention_module
from prefkit.model.attention import IMPLEMENTATION, attention_forward, masked_attention, use_lean_attention


def _plain(q, k, v, mask, scale):
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    scores = (q @ k.transpose(-1, -2)) * scale
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), -1) @ v


def _inputs(dtype, batch=2, heads=6, kv_heads=2, length=11, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    # (B, L, H, D) transposed, as the model hands them over: not contiguous
    q = (
        torch.randn(batch, length, heads, dim, generator=g, dtype=torch.float64)
        .mul(2)
        .to(dtype)
        .transpose(1, 2)
    )
    k = torch.randn(batch, kv_heads, length, dim, generator=g, dtype=torch.float64).mul(2).to(dtype)
    v = torch.randn(batch, kv_heads, length, dim, generator=g, dtype=torch.float64).to(dtype)
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    blocks = torch.zeros(length, length, dtype=torch.bool)
    blocks[:5, :5] = blocks[5:, 5:] = True  # two packed sequences
    mask = torch.stack([causal, causal & blocks]).unsqueeze(1)  # a different mask per row
    return q, k, v, mask


def _grads(fn, q, k, v, mask, weights):
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out = fn(*leaves, mask, 0.3)
    (out.double() * weights).sum().backward()
    return [out.detach().double()] + [t.grad.double() for t in leaves]


@pytest.mark.parametrize("kv_heads", [1, 2, 6], ids=["multi-query", "grouped", "multi-head"])
@pytest.mark.parametrize("shared_mask", [False, True], ids=["mask-per-row", "one-mask"])
def test_equals_plain_attention_in_float64(kv_heads, shared_mask):
    q, k, v, mask = _inputs(torch.float64, kv_heads=kv_heads)
    if shared_mask:
        mask = mask[1:]
    weights = torch.randn(q.shape, dtype=torch.float64)
    ours = _grads(masked_attention, q, k, v, mask, weights)
    plain = _grads(_plain, q, k, v, mask, weights)
    for mine, theirs in zip(ours, plain, strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-10, rtol=1e-10)


def test_bf16_is_as_accurate_as_sdpa():
    """Scores rounded to bf16 (as transformers' eager attention rounds them) against SDPA's float32 ones:
    measured against float64, outputs and gradients stay within twice SDPA's error."""
    torch.manual_seed(0)
    q, k, v, mask = _inputs(torch.float64, length=64, dim=32)
    weights = torch.randn(q.shape, dtype=torch.float64)
    truth = _grads(_plain, q, k, v, mask, weights)

    def sdpa(q, k, v, mask, scale):
        groups = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)

    low = [t.to(torch.bfloat16) for t in (q, k, v)]
    for ours, theirs, exact in zip(
        _grads(masked_attention, *low, mask, weights), _grads(sdpa, *low, mask, weights), truth, strict=True
    ):
        error = ((ours - exact).norm() / exact.norm()).item()
        assert error < 0.02 and error <= 2 * ((theirs - exact).norm() / exact.norm()).item()


def test_a_query_with_nothing_to_attend_gives_no_nan():
    q, k, v, mask = _inputs(torch.float32)
    mask = mask.clone()
    mask[0, 0, 3] = False
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out = masked_attention(*leaves, mask, 0.3)
    out.sum().backward()
    assert torch.isfinite(out).all() and all(torch.isfinite(t.grad).all() for t in leaves)


class _Module(torch.nn.Module):
    num_key_value_groups = 3
    is_causal = True


@pytest.mark.parametrize(
    "case",
    ["no-mask", "additive-mask", "mask-per-head", "one-query", "dropout-while-training", "softcap", "dtypes"],
)
def test_other_cases_go_to_sdpa(case):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    module = _Module()
    q, k, v, mask = _inputs(torch.float32, heads=6, kv_heads=2)
    kwargs: dict = {}
    if case == "no-mask":
        mask = None
    elif case == "additive-mask":
        mask = torch.zeros(mask.shape).masked_fill_(~mask, torch.finfo(torch.float32).min)
    elif case == "mask-per-head":
        mask = mask.expand(-1, q.shape[1], -1, -1)
    elif case == "dtypes":  # outside autocast
        v = v.to(torch.float64)
    elif case == "one-query":
        q, mask = q[:, :, -1:], mask[:, :, -1:]
    elif case == "dropout-while-training":
        kwargs["dropout"] = 0.5
    else:
        kwargs["softcap"] = 30.0
    # sdpa itself refuses these: the eager implementation is the one for soft-capping
    if case in ("softcap", "dtypes"):
        with pytest.raises((ValueError, RuntimeError), match=r"softcap|same dtype"):
            attention_forward(module, q, k, v, mask, **kwargs)
        return
    torch.manual_seed(0)
    ours, _ = attention_forward(module, q, k, v, mask, **kwargs)
    torch.manual_seed(0)
    theirs, _ = sdpa_attention_forward(module, q, k, v, mask, **kwargs)
    assert torch.equal(ours, theirs)


def test_keeps_the_boolean_mask_not_a_float_bias():
    """What the backward keeps: q, k, v, the output and the boolean mask itself (shared by every layer),
    nothing of the ``rows x positions x positions`` size in float."""
    q, k, v, mask = _inputs(torch.float32)
    saved: list[torch.Tensor] = []
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        masked_attention(*leaves, mask, 0.3).sum().backward()
    assert any(t is mask for t in saved)
    assert not [t for t in saved if t.dtype != torch.bool and t.shape[-2:] == mask.shape[-2:]]


def test_one_bias_per_mask_rebuilt_after_an_in_place_change():
    q, k, v, mask = _inputs(torch.float64)
    mask = mask.clone()
    first = masked_attention(q, k, v, mask, 0.3)
    bias = attention_module._bias(mask, torch.float64)
    masked_attention(q, k, v, mask, 0.3)  # a second layer: the same bias
    assert attention_module._bias(mask, torch.float64) is bias
    mask[0, 0, 5, :3] = False
    changed = masked_attention(q, k, v, mask, 0.3)
    torch.testing.assert_close(changed, _plain(q, k, v, mask, 0.3), atol=1e-10, rtol=1e-10)
    assert not torch.allclose(changed, first)
    with torch.inference_mode():  # an inference tensor has no version counter: no bias kept on it
        frozen = mask.clone()
        torch.testing.assert_close(
            masked_attention(q, k, v, frozen, 0.3), _plain(q, k, v, frozen, 0.3), atol=1e-10, rtol=1e-10
        )


def test_compiles():
    """torch_compile traces the attention (the bias is not cached there: dynamo cannot trace the cache)."""
    q, k, v, mask = _inputs(torch.float64)
    compiled = torch.compile(masked_attention, backend="eager")
    torch.testing.assert_close(
        compiled(q, k, v, mask, 0.3), _plain(q, k, v, mask, 0.3), atol=1e-10, rtol=1e-10
    )


def test_mixed_dtypes_under_autocast_train(monkeypatch):
    """Full fine-tuning in bf16 on a CPU: float32 weights under autocast, q and k float32 after the rotary
    embedding, v bf16. The backward (outside autocast) gets one dtype and gives each input its own."""
    q, k, v, mask = _inputs(torch.float32, heads=6, kv_heads=2)
    leaves = [q.detach().clone().requires_grad_(), k.clone().requires_grad_(), v.bfloat16().requires_grad_()]
    calls = []
    monkeypatch.setattr(
        attention_module, "masked_attention", lambda *a: calls.append(1) or masked_attention(*a)
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = attention_forward(_Module(), *leaves, mask, scaling=0.3)
    assert calls  # prefkit's attention, not sdpa (which would take mixed dtypes under autocast too)
    out.float().square().sum().backward()
    assert out.dtype == torch.bfloat16
    assert [t.grad.dtype for t in leaves] == [torch.float32, torch.float32, torch.bfloat16]
    plain = _plain(q.double(), k.double(), v.double(), mask, 0.3).transpose(1, 2)  # (B, L, H, D)
    assert ((out.double() - plain).norm() / plain.norm()).item() < 0.02


@pytest.mark.slow
def test_switch_applies_to_sdpa_models_only_and_is_not_saved(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    eager = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="eager")
    assert not use_lean_attention(eager) and eager.config._attn_implementation == "eager"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert use_lean_attention(model) and model.config._attn_implementation == IMPLEMENTATION
    model.save_pretrained(tmp_path / "saved")
    assert IMPLEMENTATION not in (tmp_path / "saved" / "config.json").read_text()
    # A process that never imported prefkit loads what was saved.
    code = (
        "import sys; from transformers import AutoModelForCausalLM;"
        "m = AutoModelForCausalLM.from_pretrained(sys.argv[1]); print(m.config._attn_implementation)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "saved")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "sdpa"
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["model_type"] == "llama"
