"""`prefkit generate`: replies to a file of prompts, batched, resumable, written atomically.

Input: a file of prompts (:mod:`prefkit.infer.prompts`).

Batching: prompts are decoded in fixed groups of ``batch_size`` by input position (prompts 0..7, then
8..15, ...), a group admitted together and run to its end before the next one starts. A row's logits
depend, in the last bits, on the rows it shares a forward pass with (left padding, kernel blocking), and
a sampled or greedy token can flip on such a bit; fixed groups make every prompt's neighbours, and so
its reply, the same in every run with the same settings, resumed or not. (Continuous batching, as the
server does, refills a finished row's place at once: faster, but which prompt sits next to which then
depends on where a run started.)

Resuming: results are appended to ``OUT.part`` a whole group at a time, after a first line recording
the input's checksum, the model, adapter, sampling settings and batch size. Run the same command again
after an interruption (Ctrl-C, a crash, a killed job) and it skips the groups already in ``OUT.part``
-- a half-written last line is dropped, and a group not all of whose results are there is done again
whole, with the same neighbours -- so no prompt is done twice or lost, and every reply is the one an
uninterrupted run gives. A ``.part`` made with other settings or another input is refused, never mixed
in. When every prompt is done, ``OUT`` is written in input order beside itself and renamed into place,
and the ``.part`` removed: ``OUT`` is never half-written. The output may not be the input file (nor a
link to it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import jinja2
from filelock import FileLock, Timeout

from prefkit.data.examples import Problem
from prefkit.data.tokenize import ChatEncoder
from prefkit.errors import PrefkitError
from prefkit.infer.decode import Decoder, Request
from prefkit.infer.prompts import PromptItem, read_prompts
from prefkit.infer.sampling import MAX_SEED, SamplingSettings
from prefkit.infer.stop import stop_condition
from prefkit.model.inference import LoadedModel

logger = logging.getLogger(__name__)

PART_SUFFIX = ".part"
FORMAT_VERSION = 2  # 2: results are written and resumed a whole group at a time


class GenerateError(PrefkitError):
    """The input, the output or a leftover ``.part`` file cannot be used as asked."""


def _refuse(source: Path, problems: list[Problem], skip_bad: bool) -> None:
    problems.sort(key=lambda p: (p.location.line or 0, p.location.row or 0))
    if problems and not skip_bad:
        shown = "\n".join(f"  {p}" for p in problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        raise GenerateError(
            f"{len(problems)} record(s) of {source} cannot be used:\n{shown}{more}\n"
            "Fix them, or pass --skip-bad to generate for the others."
        )


def check_files(
    input_path: str | os.PathLike[str], output_path: str | os.PathLike[str], *, skip_bad: bool, force: bool
) -> None:
    """The checks that need no model: the output may be written, the input reads and every record has a
    prompt (the CLI runs them before spending time loading the model)."""
    source, output = Path(input_path), Path(output_path)
    part = output.with_name(output.name + PART_SUFFIX)
    for written in (output, part):
        if _same_file(source, written):
            # even with --force: the replies would replace the prompts they answer
            raise GenerateError(
                f"--output {output}: {written} is the input file {source} (the same file, or a link to it); "
                "name another output file"
            )
    if output.is_dir():
        raise GenerateError(f"{output} is a folder; name the output file")
    if output.exists() and not force:
        raise GenerateError(f"{output} already exists; pass --force to replace it")
    _refuse(source, read_prompts(source)[1], skip_bad)


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file: the same path once resolved (``./x`` and ``x``, a symbolic
    link), or two hard links to it."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_part(part: Path, header: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Results already in ``part`` by prompt key; a half-written last line is cut off the file."""
    data = part.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) < len(data):
        logger.warning("%s: dropping a half-written last line (that prompt is done again)", part)
        with part.open("r+b") as f:
            f.truncate(len(complete))
    lines = complete.decode("utf-8").splitlines()
    if not lines:
        return {}
    try:
        found = json.loads(lines[0]).get("prefkit_generate")
    except (ValueError, AttributeError):
        found = None
    if found != header:
        differs = (
            ", ".join(k for k in header if not isinstance(found, dict) or found.get(k) != header[k])
            or "its format"
        )
        raise GenerateError(
            f"{part} holds results of another run (different {differs}). Rerun with the same input, model "
            f"and settings to continue it, or delete {part} to start over."
        )
    done: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(lines[1:], start=2):
        try:
            result = json.loads(line)
            done[result.pop("_key")] = result
        except (ValueError, KeyError, AttributeError) as err:
            raise GenerateError(
                f"{part}:{number}: not a result line ({err}); delete {part} to start over"
            ) from err
    return done


@dataclass
class GenerateResult:
    output: Path
    total: int
    generated: int  # done by this run
    resumed: int  # found done in the .part file
    skipped: list[Problem] = field(default_factory=list)
    completion_tokens: int = 0


def generate_file(
    loaded: LoadedModel,
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    settings: SamplingSettings,
    adapter: str | None = None,
    batch_size: int = 8,
    skip_bad: bool = False,
    force: bool = False,
    on_start: Callable[[int, int], None] | None = None,
    on_done: Callable[[int, int], None] | None = None,
) -> GenerateResult:
    """Replies to every prompt of ``input_path`` in ``output_path`` (JSONL, input order).

    ``on_start(total, already_done)`` is called once before generating, ``on_done(prompts, tokens)``
    each time a group of prompts is finished and saved (for a progress bar)."""
    source, output = Path(input_path), Path(output_path)
    part = output.with_name(output.name + PART_SUFFIX)
    check_files(source, output, skip_bad=skip_bad, force=force)
    items, problems = read_prompts(source)
    encoder = loaded.encoder(adapter)
    limit = loaded.context_length
    prompt_ids, usable = _encode_prompts(items, encoder, limit, problems)
    _refuse(source, problems, skip_bad)
    if not usable:
        raise GenerateError(f"{source}: no usable prompts")
    if settings.seed is not None and settings.seed + len(usable) - 1 > MAX_SEED:
        # prompt i samples with seed + i: every one must fit, checked before any is generated
        last = len(usable) - 1
        raise GenerateError(f"--seed {settings.seed}: prompts' seeds run to seed + {last}, over {MAX_SEED}")

    header = {
        "version": FORMAT_VERSION,
        "input_sha256": _sha256(source),
        "model": loaded.model_path,
        "adapter": str(loaded.adapters[adapter].resolve()) if adapter else None,
        "template": encoder.chat_template,
        "settings": asdict(settings),
        "batch_size": batch_size,  # the groups, so each prompt's neighbours: replies depend on them
        "dtype": str(loaded.dtype).removeprefix("torch."),  # the last bits of every logit depend on both
        "device": loaded.device.type,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    with _writing(part, output):
        done = _read_part(part, header) if part.exists() else {}
        if not part.exists() or part.stat().st_size == 0:
            part.write_text(json.dumps({"prefkit_generate": header}) + "\n", encoding="utf-8")
        todo = _groups_to_do(usable, batch_size, done)
        redo = sum(len(group) for group in todo)
        if on_start is not None:
            on_start(len(usable), len(usable) - redo)
        decoder = Decoder(loaded.model, loaded.tokenizer, max_batch=batch_size)
        stop = stop_condition(loaded.model, encoder)
        tokens = 0
        with part.open("a", encoding="utf-8") as out:
            for group in todo:
                # prompt i samples with seed + i, whether or not this run is a resumed one
                seeded = [(prompt_ids[item.key], _seeded(settings, i)) for i, item in group]
                requests = [Request(ids, s, stop, adapter=adapter, max_length=limit) for ids, s in seeded]
                results = _decode_group(decoder, [item for _, item in group], requests)
                for (_, item), result in zip(group, results, strict=True):
                    done[item.key] = result
                    out.write(json.dumps({"_key": item.key, **result}, ensure_ascii=False) + "\n")
                out.flush()
                os.fsync(out.fileno())  # a group is done once it is on disk
                new_tokens = sum(r["completion_tokens"] for r in results)
                tokens += new_tokens
                if on_done is not None:
                    on_done(len(group), new_tokens)
        _write_output(output, [done[item.key] for item in usable])
        part.unlink()
    return GenerateResult(output, len(usable), redo, len(usable) - redo, problems if skip_bad else [], tokens)


def _groups_to_do(
    usable: list[PromptItem], batch_size: int, done: dict[str, dict[str, Any]]
) -> list[list[tuple[int, PromptItem]]]:
    """The groups of ``batch_size`` prompts, by position, that are not all in ``done``. A group partly
    there (a torn write) is redone whole, with the same neighbours: its results are taken out of ``done``."""
    indexed = list(enumerate(usable))
    groups = [indexed[start : start + batch_size] for start in range(0, len(indexed), batch_size)]
    todo = [group for group in groups if not all(item.key in done for _, item in group)]
    for group in todo:
        for _, item in group:
            done.pop(item.key, None)
    return todo


def _seeded(settings: SamplingSettings, index: int) -> SamplingSettings:
    return replace(settings, seed=settings.seed + index) if settings.seed is not None else settings


def _encode_prompts(
    items: list[PromptItem], encoder: ChatEncoder, limit: int | None, problems: list[Problem]
) -> tuple[dict[str, list[int]], list[PromptItem]]:
    """Each prompt's token ids by its key, and the prompts that have them; a prompt the template cannot
    render, or too long for the model's context, is left out with a problem added."""
    prompt_ids: dict[str, list[int]] = {}
    usable: list[PromptItem] = []
    for item in items:
        try:
            ids = encoder.prompt_ids(item.messages)
        except (jinja2.TemplateError, PrefkitError, ValueError) as err:  # e.g. a template without system role
            problems.append(Problem(item.location, f"the chat template cannot render this prompt: {err}"))
            continue
        if limit is not None and len(ids) >= limit:
            problems.append(
                Problem(item.location, f"the prompt is {len(ids)} tokens; the model's context is {limit}")
            )
            continue
        prompt_ids[item.key] = ids
        usable.append(item)
    return prompt_ids, usable


@contextlib.contextmanager
def _writing(part: Path, output: Path) -> Iterator[None]:
    """One `prefkit generate` at a time writes ``output`` (a lock beside its ``.part`` file, removed
    after)."""
    lock = FileLock(str(part) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise GenerateError(f"another `prefkit generate` is writing {output} right now") from None
    try:
        yield
    finally:
        lock.release()
        Path(lock.lock_file).unlink(missing_ok=True)


def _decode_group(decoder: Decoder, items: list[PromptItem], requests: list[Request]) -> list[dict[str, Any]]:
    """Decode one group to its end, all its prompts admitted together into an idle decoder (nothing from
    another group shares a forward pass with them); each prompt's result, in order."""
    assert not decoder.has_work
    seqs = [decoder.sequence(request) for request in requests]
    for seq in seqs:
        decoder.add(seq)
    while decoder.has_work:
        decoder.step()
    for item, seq in zip(items, seqs, strict=True):
        if seq.finish_reason == "error":  # never saved as a reply: a rerun tries the group again
            raise GenerateError(f"{item.location}: the reply could not be generated: {seq.error}")
    return [_result(item, seq) for item, seq in zip(items, seqs, strict=True)]


def _result(item: PromptItem, seq: Any) -> dict[str, Any]:
    result: dict[str, Any] = item.place()
    if item.record_id is not None:
        result["id"] = item.record_id
    result.update(
        messages=[m.to_dict() for m in item.messages],
        reply=seq.text,
        finish_reason=seq.finish_reason,
        prompt_tokens=seq.prompt_tokens,
        completion_tokens=seq.completion_tokens,
    )
    return result


def _write_output(output: Path, results: list[dict[str, Any]]) -> None:
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as f:
        for result in results:
            f.write(json.dumps(result, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, output)
