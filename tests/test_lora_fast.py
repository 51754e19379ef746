"""The lean LoRA forward gives peft's outputs and gradients on every family the seeds use, and leaves
everything but plain LoRA to peft."""

from __future__ import annotations

import contextlib

import pytest
import torch
from tiny import FAMILIES, build_family

from prefkit.model.lora_fast import use_lean_lora_forward


def _lora_model(family: str, tmp_path, dropout: float = 0.0):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(build_family(family, tmp_path / family), dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear")
    model = get_peft_model(base, config)
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)  # peft starts B at zero: the update would be nothing
    return model


def _run(model, autocast: bool, seed: int = 0):
    model.zero_grad()
    torch.manual_seed(seed)
    ids = torch.randint(5, 300, (2, 9))
    context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with context:
        logits = model(input_ids=ids).logits.float()
    (logits * torch.linspace(-1, 1, logits.shape[-1])).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logits.detach(), grads


def _original(model, autocast: bool, seed: int = 0):
    """The same model with peft's own forward (the instance attribute removed, the class's forward back)."""
    from peft.tuners.lora.layer import Linear

    saved = {m: m.__dict__.pop("forward") for m in model.modules() if type(m) is Linear}
    try:
        return _run(model, autocast, seed)
    finally:
        for m, forward in saved.items():
            m.forward = forward


def _assert_same(ours, theirs, tol):
    torch.testing.assert_close(ours[0], theirs[0], atol=tol, rtol=tol)
    assert ours[1].keys() == theirs[1].keys() and any("lora_A" in n for n in ours[1])
    for name, grad in theirs[1].items():
        torch.testing.assert_close(ours[1][name], grad, atol=tol, rtol=tol, msg=name)


@pytest.fixture
def peft_calls(monkeypatch) -> list[int]:
    """Counts calls of peft's own LoRA forward: the lean forward calls it only where it does not apply."""
    from peft.tuners.lora.layer import Linear

    calls: list[int] = []
    original = Linear.forward

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Linear, "forward", counted)
    return calls


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_lean_forward_equals_peft_in_float32(family, tmp_path, peft_calls):
    model = _lora_model(family, tmp_path)
    assert use_lean_lora_forward(model) > 0
    ours = _run(model, False)
    assert not peft_calls  # every layer took the lean forward
    _assert_same(ours, _original(model, False), 1e-5)
    assert peft_calls


def test_model_with_lean_forward_pickles(tmp_path):
    """torch.save of a whole model (as some users checkpoint) keeps working, lean forward included."""
    model = _lora_model("llama", tmp_path)
    use_lean_lora_forward(model)
    torch.save(model, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    ids = torch.randint(5, 300, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)


def _relative_errors(result, truth) -> tuple[float, float]:
    """(logits, worst parameter gradient): relative distance to the float32 result."""
    logits = ((result[0] - truth[0]).norm() / truth[0].norm()).item()
    grads = max(((result[1][n] - g).norm() / g.norm()).item() for n, g in truth[1].items())
    return logits, grads


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_lean_forward_under_bf16_autocast_is_no_further_from_float32(family, tmp_path):
    """Under bf16 autocast peft rounds the update three times (scaled, added, cast back) where the lean
    forward rounds once: measured against the float32 result, its logits and gradients are no worse, on
    average over inputs (on one input either can be the closer: bf16 rounding is noise around the truth)."""
    model = _lora_model(family, tmp_path)
    use_lean_lora_forward(model)
    ours, theirs = [], []
    for seed in range(4):
        truth = _run(model, False, seed)
        ours.append(_relative_errors(_run(model, True, seed), truth))
        theirs.append(_relative_errors(_original(model, True, seed), truth))
    mean_ours = [sum(e[i] for e in ours) / len(ours) for i in (0, 1)]
    mean_theirs = [sum(e[i] for e in theirs) / len(theirs) for i in (0, 1)]
    assert all(o <= 1.1 * t for o, t in zip(mean_ours, mean_theirs, strict=True)), (ours, theirs)
    assert (
        max(e[0] for e in ours) < 0.06 and max(e[1] for e in ours) < 0.3
    )  # bf16 rounding, not another function


def test_disabled_adapter_is_the_base_model(tmp_path):
    """The reference forward of a LoRA run (adapter disabled) is the base model's."""
    model = _lora_model("llama", tmp_path)
    use_lean_lora_forward(model)
    ids = torch.randint(5, 300, (2, 9))
    with torch.no_grad(), model.disable_adapter():
        disabled = model(input_ids=ids).logits
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        base = model.get_base_model()
        with model.disable_adapter():
            plain = base(input_ids=ids).logits
    torch.testing.assert_close(disabled, plain)
    assert not torch.allclose(adapted, disabled)


def test_dropout_while_training_takes_peft_forward(tmp_path, peft_calls):
    model = _lora_model("llama", tmp_path, dropout=0.3)
    use_lean_lora_forward(model)
    model.train()
    ours = _run(model, False, seed=3)
    assert peft_calls
    _assert_same(ours, _original(model, False, seed=3), 1e-6)
    model.eval()  # dropout is off in eval: the lean forward applies, and agrees
    peft_calls.clear()
    ours = _run(model, False)
    assert not peft_calls
    _assert_same(ours, _original(model, False), 1e-5)


def test_second_adapter_is_followed(tmp_path):
    """Continuing an adapter keeps its starting copy as the reference adapter: switching adapters switches
    the lean forward's weights too."""
    from peft import LoraConfig

    model = _lora_model("llama", tmp_path)
    model.add_adapter("other", LoraConfig(r=2, lora_alpha=2, target_modules="all-linear"))
    use_lean_lora_forward(model)
    for name, p in model.named_parameters():
        if "lora_B.other" in name:
            torch.nn.init.normal_(p, std=0.5)
    ids = torch.randint(5, 300, (2, 9))
    with torch.no_grad():
        first = model(input_ids=ids).logits
        model.base_model.set_adapter("other")
        second = model(input_ids=ids).logits
    assert not torch.allclose(first, second)
    _assert_same(_run(model, False), _original(model, False), 1e-5)


def test_dora_takes_peft_forward(tmp_path, peft_calls):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(
        build_family("llama", tmp_path / "llama"), dtype=torch.float32
    )
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, use_dora=True, target_modules="all-linear"))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    use_lean_lora_forward(model)
    ours = _run(model, False)
    assert peft_calls
    _assert_same(ours, _original(model, False), 1e-6)
