"""Helpers for the web page's tests: tiny real runs, an adapter whose greedy reply is a given text, and a
headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven by selenium."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from toydata import toy_pairs

ARTIFACTS = Path(os.environ.get("PREFKIT_TEST_ARTIFACTS", Path(__file__).parent / "artifacts")) / "ui"


def train_run(
    root: Path, name: str, model_dir: Path, *overrides: str, callbacks: list[Any] | None = None
) -> Path:
    """A real prefkit run of the tiny model on the toy preference, into ``root/name``."""
    from prefkit.config import load_config
    from prefkit.train.recipe import train

    data = toy_pairs(root.parent / f"{root.name}-pairs.jsonl")
    config = load_config(
        None,
        [
            f"model_name_or_path={model_dir}",
            f"train_file={data}",
            f"output_dir={root / name}",
            "stage=dpo",
            "lora_rank=8",
            "learning_rate=5e-3",
            "per_device_train_batch_size=4",
            "max_steps=10",
            "logging_steps=1",
            "save_steps=100",
            "cutoff_len=64",
            "lr_scheduler_type=constant",
            "report_to=none",
            "plot_loss=false",
            "disable_tqdm=true",
            *overrides,
        ],
    )
    train(config, callbacks=callbacks)
    return root / name


def write_eval(folder: Path, adapter: Path, reply: str = "<b>Yes</b>") -> Path:
    """An evaluation folder as `prefkit eval --baseline` writes it (eval.json, eval.md, generations.jsonl),
    with made-up scores: the page's tests need its files, not a real measurement."""
    from prefkit.evaluate.report import write_reports

    report = {
        "settings": {
            "model": "tiny",
            "adapter": str(adapter),
            "data": ["test.jsonl"],
            "pairs": 16,
            "prompts": 16,
            "replies_scored": 16,
            "sampling": {"do_sample": False, "max_new_tokens": 32},
        },
        "model": {
            "preference": {"accuracy": 0.875, "margin": float("nan")},
            "generation": {"relevance": 0.25},
            "failed_guards": ["short (en)"],
        },
        "baseline": {
            "preference": {"accuracy": 0.5, "margin": 0.0},
            "generation": {"relevance": 0.2},
            "failed_guards": [],
        },
        "failed_guards": ["short (en)"],
        "judge": None,
    }
    prompt = "Can you help? <script>window.__pwned=4</script>"
    generations = [{"prompt": prompt, "chosen": "Yes.", "reply": reply, "baseline_reply": "No."}]
    write_reports(folder, report, generations)
    return folder


def build_reply_adapter(model_dir: Path, path: Path, reply: str) -> Path:
    """A LoRA adapter on the tiny model whose greedy reply to any chat prompt is exactly ``reply``.

    It turns the model into a lookup table of next tokens: the attention and MLP outputs are cancelled
    (LoRA deltas of -W on ``o_proj`` and ``down_proj``), so the last hidden state is the normalised
    embedding of the current token, and the ``lm_head`` delta maps the hidden state of each token of the
    chain [end of the generation prompt, reply tokens...] to the next one, the last to ``<|im_end|>``.
    Each token of the chain but the last must be distinct (a repeated token would have two successors)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    prompt = prompt["input_ids"] if isinstance(prompt, dict) or hasattr(prompt, "keys") else prompt
    chain = [prompt[-1], *tokenizer.encode(reply, add_special_tokens=False)]
    if len(set(chain)) != len(chain):
        raise ValueError(f"{reply!r}: a token repeats in {tokenizer.convert_ids_to_tokens(chain)}")
    chain.append(tokenizer.convert_tokens_to_ids("<|im_end|>"))

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    hidden = base.config.hidden_size
    lora = LoraConfig(
        r=hidden,
        lora_alpha=hidden,  # scaling 1: the delta is exactly B @ A
        target_modules=["o_proj", "down_proj", "lm_head"],
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, lora)
    with torch.no_grad():
        states = base.model.norm(base.model.embed_tokens.weight[chain[:-1]])  # (n, hidden)
        targets = torch.zeros(base.config.vocab_size, len(chain) - 1)
        targets[chain[1:], range(len(chain) - 1)] = 30.0  # the successor's logit; every other token's is 0
        wanted_head = targets @ torch.linalg.pinv(states.T)  # (vocab, hidden): head @ state_k = column k
        for name, module in model.named_modules():
            if not hasattr(module, "lora_A") or "default" not in getattr(module, "lora_A", {}):
                continue
            weight = module.base_layer.weight
            a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
            if name.endswith("lm_head"):
                a.copy_(torch.eye(hidden))
                b.copy_(wanted_head - weight)
            else:  # cancel the layer: delta = -W, through its SVD (rank <= hidden)
                u, s, vh = torch.linalg.svd(weight, full_matrices=False)
                a.copy_(vh[:hidden])
                b.copy_(-(u * s)[:, :hidden])
    model.save_pretrained(path)
    return path


def find_browser() -> tuple[str, str] | str:
    """(chromium binary, chromedriver) or the reason there are none."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    binary = os.environ.get("PREFKIT_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
    )
    driver = os.environ.get("PREFKIT_CHROMEDRIVER") or shutil.which("chromedriver")
    binary, driver = (p if p and os.access(p, os.X_OK) else None for p in (binary, driver))
    if not binary or not driver:
        missing = " and ".join(n for n, p in (("chromium", binary), ("chromedriver", driver)) if not p)
        return (
            f"no {missing} found: install chromium and its driver (Debian: apt-get install chromium "
            "chromium-driver; .ci/run does) or set PREFKIT_CHROMIUM / PREFKIT_CHROMEDRIVER"
        )
    return binary, driver


def start_browser(binary: str, driver: str, width: int = 1400, height: int = 1000) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--lang=en-US", "--no-first-run"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(driver))
