"""How far bf16 log-probs are from float32 ones, per batch layout and attention: the yardstick for the race's
step-1 loss differences.

    python benchmarks/bf16_error.py [--model smollm2-135m-instruct] [--pairs 32]

Computes the per-token average log-prob of the chosen and rejected reply of ``--pairs`` bundled tutor pairs
(the race's data) in float32 with the padded layout and torch's SDPA (the reference), then in bf16 autocast
with a bf16 model (as training runs it) three ways: TRL's layout (padded rows, SDPA), prefkit's packed
layout with SDPA, and prefkit's packed layout with its own attention (what training uses). Prints and
writes the mean and mean absolute error per token against float32, and the same for the SimPO-style
logit ``avg(chosen) - avg(rejected)`` of each pair. Deterministic: no timing, any machine.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from prefkit.data.collate import PreferenceCollator, SharedPromptCollator
from prefkit.data.formats import parse_file
from prefkit.env import cache_dir
from prefkit.model.attention import use_lean_attention
from prefkit.model.logps import sequence_logps
from prefkit.model.sources import resolve_first

RESULTS = Path(__file__).parent / "results" / "bf16_error.json"


def features(tokenizer, pairs: int) -> list[dict[str, list[int]]]:
    """The race's pairs, tokenised as the chat template renders them (prompt, then each reply and its
    end of turn)."""
    out = []
    for example in parse_file("builtin:tutor_train", stage="dpo").examples[:pairs]:
        messages = [m.to_dict() for m in example.prompt]
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        full = {
            side: tokenizer.apply_chat_template(
                [*messages, {"role": "assistant", "content": reply}], tokenize=False
            )
            for side, reply in (("chosen", example.chosen), ("rejected", example.rejected))
        }
        ids = {k: tokenizer(v, add_special_tokens=False)["input_ids"] for k, v in full.items()}
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        out.append(
            {
                "prompt_ids": prompt_ids,
                "chosen_ids": ids["chosen"][len(prompt_ids) :],
                "rejected_ids": ids["rejected"][len(prompt_ids) :],
            }
        )
    return out


def per_token(path: str, dtype: torch.dtype, batch: dict, lean: bool) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    if lean:
        use_lean_attention(model)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        sums, counts, _ = sequence_logps(model, batch)
    return sums.double() / counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    from transformers import AutoTokenizer

    path = resolve_first(args.model, cache_dir())
    tokenizer = AutoTokenizer.from_pretrained(path)
    feats = features(tokenizer, args.pairs)
    padded = PreferenceCollator(tokenizer.pad_token_id)(feats)
    packed = SharedPromptCollator(tokenizer.pad_token_id, pack_length=320)(feats)
    truth = per_token(path, torch.float32, padded, lean=False)
    half = args.pairs
    result: dict = {"command": "python benchmarks/bf16_error.py", "model": args.model, "pairs": args.pairs}
    for name, batch, lean in (
        ("padded, sdpa (TRL's layout)", padded, False),
        ("packed, sdpa", packed, False),
        ("packed, prefkit attention (training)", packed, True),
    ):
        error = per_token(path, torch.bfloat16, batch, lean) - truth
        margin = error[:half] - error[half:]
        result[name] = {
            "per_token_mean_error": round(error.mean().item(), 5),
            "per_token_mean_abs_error": round(error.abs().mean().item(), 5),
            "margin_mean_abs_error": round(margin.abs().mean().item(), 5),
        }
        print(f"{name:40s} {json.dumps(result[name])}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
