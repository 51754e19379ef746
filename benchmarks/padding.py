"""How much of a preference epoch is padding, by batch layout and sampler: no model runs, only the collators.

    python benchmarks/padding.py [--model smollm2-135m-instruct] [--data builtin:tutor_train] [--batch 4]
                                 [--cutoff 160] [--seed 42]

Tokenises the data as training does (the model's chat template, ``cutoff_len``), draws one epoch of
batches with transformers' random sampler and with its length-grouped one (``train_sampling_strategy:
group_by_length``, which reads each pair's ``length``), lays each batch out as the collator of each
``batch_layout`` does, and counts the positions a forward pass would compute and how many of them are
padding. Writes ``benchmarks/results/padding.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "padding.json"


def positions(batch: dict[str, Any], features: list[dict[str, Any]]) -> tuple[int, int]:
    """(positions computed, of which real tokens) for one collated batch."""
    from prefkit.data.collate import pair_tokens

    ids = batch["input_ids"]
    if batch["attention_mask"].dim() == 2:  # padded: every position of the (rows, length) block runs
        return ids.numel(), int(batch["attention_mask"].sum())
    return ids.numel(), sum(pair_tokens(f) for f in features)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--data", default="builtin:tutor_train")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--cutoff", type=int, default=160)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    from functools import partial

    import torch
    from transformers import AutoConfig, AutoTokenizer
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from prefkit.config import load_config
    from prefkit.data.collate import preference_collator
    from prefkit.data.load import prepare_data
    from prefkit.env import cache_dir
    from prefkit.model.attention import attention_takes_mask
    from prefkit.model.sources import resolve_first

    model_dir = resolve_first(args.model, cache_dir())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = load_config(
        None,
        [
            f"model_name_or_path={model_dir}",
            f"train_file={args.data}",
            "stage=dpo",
            f"cutoff_len={args.cutoff}",
        ],
    )
    dataset = prepare_data(config, tokenizer).train
    features = [dict(f) for f in dataset]
    generator = torch.Generator().manual_seed(args.seed)
    orders = {
        "random": torch.randperm(len(features), generator=generator).tolist(),
        "group_by_length": list(
            LengthGroupedSampler(
                args.batch, lengths=dataset["length"], generator=generator.manual_seed(args.seed)
            )
        ),
    }
    model_config = AutoConfig.from_pretrained(model_dir)
    model_config._attn_implementation = "sdpa"  # what the loaded model trains with on a CPU
    rows = []
    for layout in ("padded", "shared_prompt", "packed"):
        collate = preference_collator(
            layout,
            tokenizer.pad_token_id,
            takes_mask=partial(attention_takes_mask, model_config),
            cutoff_len=args.cutoff,
        )
        for sampler, order in orders.items():
            computed = real = 0
            for start in range(0, len(order), args.batch):
                batch_features = [features[i] for i in order[start : start + args.batch]]
                done, tokens = positions(collate(batch_features), batch_features)
                computed, real = computed + done, real + tokens
            rows.append(
                {
                    "layout": layout,
                    "sampler": sampler,
                    "positions": computed,
                    "real_tokens": real,
                    "padding_share": round(1 - real / computed, 3),
                }
            )
            print(f"{layout:14} {sampler:16} positions {computed:7d}  padding {1 - real / computed:6.1%}")
    command = " ".join(["python", "benchmarks/padding.py", *sys.argv[1:]])
    result = {
        "command": command,
        "pairs": len(features),
        "batch": args.batch,
        "cutoff": args.cutoff,
        "rows": rows,
    }
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
