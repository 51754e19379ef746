"""Generation during training (``eval_generate: N``): at each evaluation, reply to the first N prompts of
the eval split, score the replies, and hand the means to the trainer, which logs them as ``eval_<metric>``
beside the preference metrics -- so ``metric_for_best_model`` can name any scorer's metric (the Socratic
notebook keeps its best checkpoint by ``combined_score``). A small table of replies is logged too, as the
markdown string ``eval_samples``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from prefkit.data.examples import Example
from prefkit.data.tokenize import ChatEncoder
from prefkit.errors import PrefkitError
from prefkit.infer.sampling import SamplingSettings
from prefkit.score.generation import generate_samples, score_and_summarise
from prefkit.score.scorers import DEFAULT_SCORERS, Sample, Scorer, resolve_scorers

if TYPE_CHECKING:
    from prefkit.config import Config

TABLE_ROWS = 3  # replies shown in eval_samples
TABLE_CELL = 160  # characters per cell


def sample_table(samples: Sequence[Sample], metrics: Sequence[str]) -> str:
    def cell(text: str) -> str:
        text = " ".join(text.split()).replace("|", "\\|")
        return text if len(text) <= TABLE_CELL else text[: TABLE_CELL - 1] + "…"

    head = ["prompt", "reply", *metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for s in samples:
        scores = [f"{s.scores[m]:.2f}" if m in s.scores else "" for m in metrics]
        lines.append("| " + " | ".join([cell(s.prompt), cell(s.reply), *scores]) + " |")
    return "\n".join(lines)


class GenerationEval:
    """Called by the trainer with its model at each evaluation; returns the metrics to log (unprefixed)."""

    def __init__(
        self,
        encoder: ChatEncoder,
        examples: Sequence[Example],
        scorers: Sequence[tuple[str, Scorer]],
        settings: SamplingSettings,
        batch_size: int = 8,
    ) -> None:
        self.encoder = encoder
        self.examples = list(examples)
        self.scorers = list(scorers)
        self.settings = settings
        self.batch_size = batch_size

    def __call__(self, model: Any) -> dict[str, Any]:
        samples = generate_samples(
            model, self.encoder, self.examples, settings=self.settings, batch_size=self.batch_size
        )
        summary: dict[str, Any] = score_and_summarise(samples, self.scorers)
        extra = [name for name, _ in self.scorers if name not in DEFAULT_SCORERS]
        shown = [m for m in ("relevance", "rouge_l", *extra) if m in summary]
        summary["samples"] = sample_table(samples[:TABLE_ROWS], shown)
        return summary


def generation_eval_for(
    config: Config, tokenizer: Any, eval_examples: Sequence[Example]
) -> GenerationEval | None:
    """The eval_generate hook for a run, or None when ``eval_generate`` is 0. Scorers are resolved here, so
    a misnamed one fails before training starts."""
    if not config.eval_generate:
        return None
    if config.eval_strategy == "no":
        raise PrefkitError("eval_generate needs evaluations: set eval_strategy: steps (or epoch)")
    if not eval_examples:
        raise PrefkitError("eval_generate needs evaluation data: set val_size, eval_file or eval_dataset")
    return GenerationEval(
        ChatEncoder(tokenizer, config.template, config.cutoff_len),
        eval_examples[: config.eval_generate],
        resolve_scorers(config.eval_scorers),
        SamplingSettings(max_new_tokens=config.eval_max_new_tokens),
        batch_size=config.per_device_eval_batch_size,
    )
