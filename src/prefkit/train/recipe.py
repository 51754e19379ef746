"""`prefkit train`: one function from a Config to a finished output folder, read top to bottom in
:func:`train`:

    plan     the output folder's rules, resume checks (or finish a run whose training is done)
    load     pre-flight checks, the model (+ reference)
    prepare  the data, the TrainingArguments
    train    claim the folder, PrefTrainer, stop cleanly on a signal
    finish   the final save, plots, the run marked finished

What a finished run leaves in ``output_dir``: the adapter (or full model) and tokenizer, loadable with
``PeftModel.from_pretrained`` / ``AutoModelForCausalLM.from_pretrained``; ``training_config.json``;
``metrics.jsonl``; ``loss.png`` (+ ``rewards.png`` for preference stages); ``checkpoint-N/`` folders;
and ``prefkit_run.json``, the run marker (see prefkit.train.run.folder), with ``"status": "finished"``.

Nothing touches the output folder until the config, the folder, the model and the data have passed
their checks, so a run refused for any reason leaves a previous run exactly as it was. From the first
write on, a run killed at any moment resumes: from its newest checkpoint, or -- killed after training
-- by finishing the final save without training again.
"""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from prefkit.data.collate import SFTCollator, preference_collator
from prefkit.data.load import prepare_data
from prefkit.env import cache_dir
from prefkit.errors import PrefkitError, TrainingInterrupted
from prefkit.model.attention import attention_takes_mask
from prefkit.model.loader import run_dtype
from prefkit.model.quantization import Quantization
from prefkit.model.sources import resolve_first
from prefkit.model.training import load_base_model, load_for_training, trainable_parameters, trains_on_gpu
from prefkit.train.distributed import is_first_process, mislaunch_warning
from prefkit.train.fusion import Fusion, accumulation_fusion, longest_row
from prefkit.train.generation_eval import GenerationEval, generation_eval_for
from prefkit.train.losses import LOSSES, LossParams
from prefkit.train.refcache import ReferenceCache, reference_identity
from prefkit.train.run.finish import finish_from_checkpoint, finish_saved_run, save_final, write_plots
from prefkit.train.run.folder import RunFolder
from prefkit.train.run.metrics import (
    METRICS_FILE,
    MetricsJsonl,
    read_metrics,
    truncate_metrics,
)
from prefkit.train.run.preflight import preflight
from prefkit.train.run.resume import check_resume, training_complete
from prefkit.train.run.signals import GracefulStop
from prefkit.train.run.start import StartPlan, check_not_overlapping, plan_start, training_into
from prefkit.train.settings import record_config, training_arguments, training_config_record
from prefkit.train.sharding import loading_whole, prepare_sharding

if TYPE_CHECKING:
    from accelerate import PartialState
    from transformers import TrainerCallback, TrainingArguments

    from prefkit.config import Config
    from prefkit.data.load import PreparedData
    from prefkit.model.training import TrainingModel
    from prefkit.train.trainer import PrefTrainer

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    output_dir: Path
    global_step: int
    metrics: list[dict[str, Any]]
    resumed_from: Path | None
    train_seconds: float


def model_path(config: Config) -> str:
    """The model folder (or hub id) to train: the first of ``model_name_or_path``'s candidates that loads,
    builtin aliases and .gguf files converted once into the cache."""
    if not config.model_name_or_path:
        raise PrefkitError(
            "model_name_or_path is not set: name a builtin model (smollm2-135m-instruct), a "
            "local model folder, a .gguf file or a hub id"
        )
    return resolve_first(config.model_name_or_path, cache_dir(config.cache_dir))


def open_reference_cache(config: Config, model: str) -> ReferenceCache:
    """The reference cache for this run's reference: the model, the adapter training starts from (the
    reference with LoRA on an adapter), the precision and the quantisation."""
    cache = cache_dir(config.cache_dir)
    quantization = Quantization.of(config)
    dtype = run_dtype(config.bf16, config.fp16)
    quantized = None
    if quantization is not None:
        compute = Quantization.compute_dtype(dtype, torch.device("cuda" if trains_on_gpu(config) else "cpu"))
        quantized = {**quantization.identity(), "compute_dtype": str(compute)}
    identity = reference_identity(model, config.adapter_name_or_path, dtype, cache, quantized)
    return ReferenceCache.open(cache, identity)


def _read_paths(config: Config) -> dict[str, list[Path]]:
    """The local paths a run reads (hub ids and builtin names are not paths and are left out)."""
    models = config.model_name_or_path or []
    data = [p for p in (config.train_file, config.eval_file) if p and not p.startswith("builtin:")]
    return {
        "the model": [Path(m) for m in ([models] if isinstance(models, str) else models)],
        "the adapter": [Path(config.adapter_name_or_path)] if config.adapter_name_or_path else [],
        "the data": [Path(p) for p in data]
        + ([Path(config.dataset_dir)] if config.dataset or config.eval_dataset else []),
    }


def _integration_dirs(config: Config) -> list[str]:
    """Folders reporting integrations write inside output_dir (TensorBoard's `runs/`)."""
    report_to = [config.report_to] if isinstance(config.report_to, str) else list(config.report_to)
    return ["runs"] if {"tensorboard", "all"} & set(report_to) else []


def _defaults() -> dict[str, Any]:
    from prefkit.config import Config

    return Config().resolved()


def train(config: Config, *, callbacks: list[TrainerCallback] | None = None) -> TrainResult:
    """Train ``config`` into its ``output_dir``: plan -> load -> prepare -> train -> finish. Every rank of a
    multi-process run decides the same way (errors included); only the main process changes files."""
    from accelerate import PartialState

    from prefkit.train.trainer import PrefTrainer  # transformers' Trainer: imported when training

    state = PartialState()
    if (warning := mislaunch_warning()) is not None:
        logger.warning(warning)
    output_dir = Path(config.output_dir)
    with training_into(output_dir, enabled=is_first_process()):
        plan = _plan(config, output_dir)
        if isinstance(plan, TrainResult):  # nothing left to train: the run was finished from disk
            return plan
        model, loaded, needs_reference, cached_full = _load(config, output_dir)
        ready = _prepare(config, loaded)
        folder = _claim_folder(config, plan, output_dir, state)
        _log_start(config, model, loaded, ready.data)
        fusion = ready.fusion
        if fusion.factor > 1:
            logger.info(fusion.describe())
        stop = GracefulStop()
        trainer = PrefTrainer(
            stage=config.stage,
            loaded=loaded,
            pref_loss=config.pref_loss,
            loss_params=_loss_params(config),
            args=ready.args,
            train_dataset=ready.data.train,
            eval_dataset=ready.data.eval,
            data_collator=ready.collator,
            callbacks=[MetricsJsonl(output_dir / METRICS_FILE), stop, *(callbacks or [])],
            reference_cache=open_reference_cache(config, model)
            if needs_reference and config.reference_cache
            else None,
            generation_eval=ready.generation_eval,
            micro_batch=fusion.micro_batch if fusion.factor > 1 else None,
        )
        prepare_sharding(trainer)  # FSDP turned on for CPU processes (else DDP); its reference made safe
        if cached_full or (trainer.reference_cache is not None and config.precompute_ref_log_probs):
            trainer.precompute_reference(lambda: _load_reference_copy(model, config))
        trainer.run_folder = folder
        if folder is not None:
            record = training_config_record(config, model, ready.args, loaded, ready.data)
            record_config(folder, record, plan.start, plan.resumed_step, plan.changed)
        train_seconds = _run(trainer, stop, plan.start, output_dir)
        return _finish(config, trainer, folder, state, plan.start, output_dir, train_seconds)


@dataclass
class _Plan:
    start: StartPlan
    resumed_step: int | None = None  # the step of the checkpoint resumed from
    changed: list[str] = field(default_factory=list)  # settings changed since it, none altering the result


def _plan(config: Config, output_dir: Path) -> _Plan | TrainResult:
    """How this run starts (fresh, resumed from a checkpoint whose settings this config may continue) --
    or, where training is already done and only its final save is missing, the run finished from disk."""
    check_not_overlapping(output_dir, _read_paths(config))
    start = plan_start(output_dir, config.overwrite_output_dir, config.resume_from_checkpoint)
    if start.action == "finish":
        step = finish_saved_run(config, start, output_dir)
        return TrainResult(output_dir, step, read_metrics(output_dir / METRICS_FILE), None, 0.0)
    if start.resume_from is None:
        return _Plan(start)
    run_dir = output_dir if start.action == "resume" else start.resume_from.parent
    resumed_step, changed = check_resume(start.resume_from, config.resolved(), _defaults(), run_dir)
    for line in changed:
        logger.info("resuming with a changed setting that does not alter the result: %s", line)
    if start.action == "resume" and training_complete(start.resume_from, config.max_steps, changed):
        finish_from_checkpoint(config, start, output_dir, resumed_step)
        metrics = read_metrics(output_dir / METRICS_FILE)
        return TrainResult(output_dir, resumed_step, metrics, start.resume_from, 0.0)
    return _Plan(start, resumed_step, changed)


def _load(config: Config, output_dir: Path) -> tuple[str, TrainingModel, bool, bool]:
    """The model to train (after the pre-flight checks) and, where the loss needs one, its reference.
    Returns the model's folder, the loaded model, whether the loss needs a reference, and whether that
    reference is read from the cache alone (full fine-tuning: no frozen copy is kept for the run)."""
    from transformers import set_seed

    needs_reference = config.stage == "dpo" and LOSSES[config.pref_loss].needs_reference
    model = model_path(config)
    check_not_overlapping(output_dir, {"the model": [Path(model)]})
    preflight(config, model, needs_reference)
    set_seed(config.seed)  # before the adapter is created: its initial weights are part of the run
    # Full fine-tuning with the reference cache loads no frozen copy for the whole run: the cache is filled
    # first (with a copy loaded only if pairs are missing) and training reads it.
    cached_full = needs_reference and config.reference_cache and config.finetuning_type == "full"
    with loading_whole():  # the same model whatever an earlier DeepSpeed run in this process left set
        loaded = load_for_training(config, model, needs_reference and not cached_full)
    return model, loaded, needs_reference, cached_full


def _load_reference_copy(model: str, config: Config) -> Any:
    """The frozen copy that fills the reference cache before training (full fine-tuning): whole, as the
    cache is filled by each process on its own share of the pairs, outside DeepSpeed."""
    with loading_whole():
        return load_base_model(model, config).eval().requires_grad_(False)


@dataclass
class _Prepared:
    data: PreparedData
    args: TrainingArguments
    collator: Any  # the batch layout's collator
    generation_eval: GenerationEval | None
    fusion: Fusion  # how the accumulation window trains (the data's lengths known)


def _prepare(config: Config, loaded: TrainingModel) -> _Prepared:
    """The tokenised data, the TrainingArguments, the collator (the batch layout checked against the
    model) and the generation during evaluation (its scorers resolved) -- every one of them refused, if it
    must be, before the output folder is touched."""
    prepared = prepare_data(config, loaded.tokenizer)
    generation_eval = generation_eval_for(config, loaded.tokenizer, prepared.eval_examples)
    fusion = accumulation_fusion(config, longest_row(prepared.train))
    args = training_arguments(config, fusion)
    if config.eval_strategy != "no" and prepared.eval is None:
        raise PrefkitError(
            f"eval_strategy: {config.eval_strategy} needs evaluation data: set val_size, "
            "eval_file or eval_dataset"
        )
    return _Prepared(prepared, args, _collator(config, loaded), generation_eval, fusion)


def _claim_folder(config: Config, plan: _Plan, output_dir: Path, state: PartialState) -> RunFolder | None:
    """Only now, with the model and data known good, touch the output folder (the main process only): a
    run that fails its checks leaves the previous one exactly as it was. A resumed run's metrics log is
    cut back to its checkpoint."""
    folder = None
    if state.is_main_process:
        start = plan.start
        folder = RunFolder.claim(output_dir, start.marker, clear=start.clear, resume=start.action == "resume")
        for name in _integration_dirs(config):
            folder.claim_name(name)
        metrics_path = folder.claim_name(METRICS_FILE)
        if start.resume_from is None:
            metrics_path.unlink(missing_ok=True)
        else:
            dropped = truncate_metrics(metrics_path, plan.resumed_step or 0)
            logger.info(
                "resuming from %s%s",
                start.resume_from,
                f" (dropped {dropped} metrics records logged after it)" if dropped else "",
            )
    state.wait_for_everyone()
    return folder


def _log_start(config: Config, model: str, loaded: TrainingModel, prepared: PreparedData) -> None:
    trainable, total = trainable_parameters(loaded.model)
    logger.info(
        "%s training %s with %s: %d train / %d eval examples; %s of %s parameters trainable",
        config.stage,
        model,
        config.pref_loss if config.stage == "dpo" else "sft",
        len(prepared.train),
        len(prepared.eval or []),
        f"{trainable:,}",
        f"{total:,}",
    )


def _collator(config: Config, loaded: TrainingModel) -> Any:
    pad = loaded.tokenizer.pad_token_id
    if config.stage != "dpo":
        return SFTCollator(pad)
    return preference_collator(
        config.batch_layout,
        pad,
        takes_mask=partial(attention_takes_mask, loaded.model.config),
        cutoff_len=config.cutoff_len,
        pack_length=config.pack_length,
    )


def _loss_params(config: Config) -> LossParams:
    return LossParams(
        beta=config.pref_beta,
        gamma=config.simpo_gamma or 0.0,
        label_smoothing=config.dpo_label_smoothing,
        ftx=config.pref_ftx,
    )


def _run(trainer: PrefTrainer, stop: GracefulStop, start: StartPlan, output_dir: Path) -> float:
    """Train (from the checkpoint to resume, if any); the seconds it took. A SIGINT/SIGTERM ends it at the
    end of the step in progress, with a checkpoint saved, as :class:`TrainingInterrupted`."""
    started = time.perf_counter()
    with stop.handling():
        trainer.train(resume_from_checkpoint=str(start.resume_from) if start.resume_from else None)
    train_seconds = time.perf_counter() - started
    if stop.signum is not None:
        name = signal.Signals(stop.signum).name
        raise TrainingInterrupted(
            f"stopped by {name} after step {stop.stopped_at}, with checkpoint-{stop.stopped_at} saved in "
            f"{output_dir}: run the same command again to resume from it",
            stop.signum,
        )
    return train_seconds


def _finish(
    config: Config,
    trainer: PrefTrainer,
    folder: RunFolder | None,
    state: PartialState,
    start: StartPlan,
    output_dir: Path,
    train_seconds: float,
) -> TrainResult:
    """The final model saved (crash-safe), the plots drawn, the run marked finished."""
    save_final(trainer, folder, state, output_dir)
    if folder is not None:
        write_plots(folder, config)
        folder.finish(
            global_step=trainer.state.global_step,
            train_seconds=round(train_seconds, 2),
            resumed_from=str(start.resume_from) if start.resume_from else None,
            world_size=state.num_processes,
        )
    state.wait_for_everyone()
    return TrainResult(
        output_dir,
        trainer.state.global_step,
        read_metrics(output_dir / METRICS_FILE),
        start.resume_from,
        train_seconds,
    )
