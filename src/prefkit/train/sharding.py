"""Sharded training (FSDP, DeepSpeed ZeRO; ``fsdp`` / ``fsdp_config`` / ``deepspeed`` are passed through to
``transformers.TrainingArguments``): what prefkit adds so that a run under them trains what it would
train without them.

* **FSDP on CPU processes.** accelerate 1.16 turns its FSDP plugin on only for GPU-like process groups
  (its ``AcceleratorState`` sets ``DistributedType.FSDP`` inside the MULTI_GPU/NPU/XPU/... branch); on CPU
  processes it keeps ``MULTI_CPU`` and wraps the model in DDP, silently. torch's FSDP2 (``fully_shard``)
  runs on CPU over gloo (torch 2.13), so :func:`prepare_sharding` gives the accelerator state the plugin
  and the FSDP type, as accelerate does on GPUs -- in ``PartialState`` too, since every new
  ``AcceleratorState()`` copies its type from there (barriers then pass the local rank as
  ``device_ids``, which gloo takes). FSDP1 does not run there: accelerate refuses its default
  ``sync_module_states`` on CPU, and without it torch's FSDP1 refuses the device accelerate gives it
  ("Inconsistent compute device and `device_id` on rank 0: cpu vs cpu:0"); :func:`fsdp_problem` says so
  before the model is loaded, as it says of a ``state_dict_type`` that would leave no final model.
* **Every forward of a sharded model is a collective** (FSDP, ZeRO-3). With LoRA the reference is the
  sharded policy with its adapter off, and the reference cache answers per process: one process finding
  its pairs cached while another does not would run the forward on one process only.
  :class:`AgreedReferenceCache` makes it a hit only where every process's pairs are cached.
* **A frozen reference copy** (full fine-tuning without the reference cache) is sharded like the policy
  under FSDP, so it does not need a whole model's memory on every process; it runs on every process at
  every step. Under DeepSpeed it stays whole: see :func:`loading_whole`.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from prefkit.config import Config
    from prefkit.train.refcache import ReferenceCache

logger = logging.getLogger(__name__)

FULL_STATE_DICT = "FULL_STATE_DICT"


def fsdp_settings(config: Config) -> dict[str, Any] | None:
    """The ``fsdp_config`` a run with ``fsdp`` set is given (read from its file where it names one, the
    ``fsdp_`` prefixes dropped as transformers drops them); None where FSDP is not asked for."""
    args = config.training_arguments
    if not args.get("fsdp"):
        return None
    given = args.get("fsdp_config") or {}
    if isinstance(given, str):
        try:
            given = json.loads(Path(given).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # transformers names the file it cannot read; nothing to check here
    if not isinstance(given, dict):
        return {}
    return {(k[5:] if k.startswith("fsdp_") else k): v for k, v in given.items()}


def fsdp_problem(config: Config, world_size: int, on_gpu: bool) -> tuple[str, str] | None:
    """Why an FSDP run cannot work as configured (before any model is loaded): the key to change and a
    sentence starting with it; or None."""
    settings = fsdp_settings(config)
    if settings is None:
        return None
    if world_size < 2:
        # transformers would refuse it only once the model is loaded ("Using fsdp only works in
        # distributed training"), with a traceback.
        value = config.training_arguments["fsdp"]
        shown = json.dumps(value) if isinstance(value, bool) else value  # as YAML writes it: true
        return "fsdp", (
            f"fsdp: {shown} shards the model across processes, and this run has one: run `prefkit "
            "train CONFIG --nproc N` (or `torchrun --nproc_per_node N -m prefkit train CONFIG`) with "
            "N >= 2, or remove fsdp"
        )
    state_dict_type = str(settings.get("state_dict_type", FULL_STATE_DICT))
    if state_dict_type != FULL_STATE_DICT:
        # transformers' save_model writes no model at all then: the run would fail at its final save.
        return "fsdp_config", (
            f"fsdp_config: state_dict_type {state_dict_type} saves each checkpoint as per-process shards "
            f"and the final model not at all; prefkit saves the adapter or model loadable with "
            f"from_pretrained: set state_dict_type: {FULL_STATE_DICT} (the default)"
        )
    version = str(settings.get("version", 2))
    if not on_gpu and version != "2":
        return "fsdp_config", (
            f"fsdp_config: version {version} (FSDP1) does not run on CPU processes (accelerate 1.16 and "
            "torch's FSDP1 refuse the CPU device): set version: 2 (FSDP2, the default)"
        )
    return None


class AgreedReferenceCache:
    """A reference cache whose answer for a batch is the same on every process: a hit only where every
    process found all its pairs; else every process computes its reference log-probs (and caches them).
    The rest is the wrapped cache's."""

    def __init__(self, cache: ReferenceCache, device: torch.device) -> None:
        self._cache = cache
        self._device = device

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cache, name)

    def get(self, keys: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor] | None:
        found = self._cache.get(keys)
        hit = torch.tensor([0.0 if found is None else 1.0], device=self._device)
        torch.distributed.all_reduce(hit, op=torch.distributed.ReduceOp.MIN)
        if found is not None and hit.item() == 0:
            self._cache.hits -= len(keys)  # counted as what it turned out to be
            self._cache.misses += len(keys)
            return None
        return found


def shard_frozen(model: torch.nn.Module) -> torch.nn.Module:
    """FSDP2 over a frozen copy, on the default mesh of all processes: each decoder layer (the classes the
    model names as not to be split), the input embeddings, an untied output layer, then the rest. Each
    unit but the root is gathered for its forward and freed after it; FSDP2 keeps the root's gathered
    after a forward (for the backward a frozen copy never has), so the large matrices get units of their
    own."""
    from torch.distributed.fsdp import fully_shard

    layer_classes = set(getattr(model, "_no_split_modules", None) or [])
    for module in list(model.modules()):
        if type(module).__name__ in layer_classes:
            fully_shard(module)
    embeddings, head = model.get_input_embeddings(), model.get_output_embeddings()
    if embeddings is not None and head is not None and head.weight is embeddings.weight:
        fully_shard([embeddings, head])  # tied: a weight may belong to one unit only
    else:
        for part in (embeddings, head):
            if part is not None:
                fully_shard(part)
    fully_shard(model)
    return model


@contextlib.contextmanager
def loading_whole() -> Iterator[None]:
    """Models loaded inside are whole on every process. Once a DeepSpeed ZeRO-3 config is alive in the
    process (TrainingArguments made one: the reference copy is loaded after them, and an earlier run in
    the same process leaves its own), ``from_pretrained`` partitions what it loads (``zero.Init``); a model
    the Trainer does not hand to DeepSpeed -- a frozen reference copy -- then has empty weights ("'weight'
    must be 2-D" at its first forward), and one loaded before DeepSpeed has set up its processes fails its
    batch-size check. The policy is partitioned by ``deepspeed.initialize`` either way."""
    try:
        from transformers.integrations import deepspeed
    except ImportError:  # transformers without its DeepSpeed integration: nothing to switch off
        yield
        return
    reference = getattr(deepspeed, "_hf_deepspeed_config_weak_ref", None)  # what set_... keeps
    active = reference() if reference is not None else None
    if active is None:
        yield
        return
    deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        deepspeed.set_hf_deepspeed_config(active)


def _enable_on_cpu(trainer: Any) -> bool:
    """accelerate's FSDP for CPU processes (see the module docstring); True where it switched it on."""
    from accelerate import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = trainer.accelerator.state
    if getattr(state, "fsdp_plugin", None) is not None or state.distributed_type != DistributedType.MULTI_CPU:
        return False  # accelerate set FSDP up itself (GPUs), or a single process (pre-flight refuses it)
    plugin = FullyShardedDataParallelPlugin(**trainer.args.fsdp_plugin_args)
    if state.mixed_precision != "no":
        plugin.set_mixed_precision(state.mixed_precision)  # as AcceleratorState does for GPUs
    state.fsdp_plugin = plugin
    state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    # transformers read this flag when it built the accelerator; it decides how the model is prepared,
    # saved and loaded from a checkpoint from here on.
    trainer.is_fsdp_enabled = True
    return True


def prepare_sharding(trainer: Any) -> None:
    """After the Trainer is built, before the model is prepared: FSDP switched on for CPU processes, the
    reference cache agreed across processes, a frozen reference copy sharded (FSDP). A no-op without
    ``fsdp`` or ``deepspeed``."""
    on_cpu = getattr(trainer.args, "fsdp_plugin_args", None) is not None and _enable_on_cpu(trainer)
    if not (trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled):
        return
    if trainer.reference_cache is not None:
        trainer.reference_cache = AgreedReferenceCache(trainer.reference_cache, trainer.args.device)
    if trainer.is_fsdp_enabled:
        if trainer.loaded.reference is not None:
            shard_frozen(trainer.loaded.reference)
        plugin = trainer.accelerator.state.fsdp_plugin
        where = "CPU processes (gloo)" if on_cpu else "processes"
        logger.info("FSDP%d on %d %s", plugin.fsdp_version, trainer.accelerator.num_processes, where)
