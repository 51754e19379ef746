"""Property-based fuzzing (hypothesis) of every reader, `data check`, the config loader and
dataset_info.json: whatever the input, the answer is a report or a PrefkitError -- never a traceback --
and every problem in a line-based file names its line. `data check` and training agree on every input.

A fast, deterministic slice runs in CI (PREFKIT_FUZZ_EXAMPLES inputs per target, 100 by default); the
long run is `python scripts/fuzz.py --examples 10000` (see docs/reliability.md)."""

from __future__ import annotations

import itertools
import re
import tempfile
from pathlib import Path

import pytest
from fuzzkit import FUZZ, chat_files, data_files, dataset_infos, overrides, yaml_texts
from hypothesis import given
from typer.testing import CliRunner

from prefkit.cli import app
from prefkit.config import ConfigError, load_config
from prefkit.data.dataset_info import resolve_dataset
from prefkit.data.examples import PreferenceExample
from prefkit.data.formats import parse_file
from prefkit.data.load import check_data, prepare_data
from prefkit.data.readers import read_records
from prefkit.data.sources import DataError
from prefkit.data.tokenize import ChatEncoder
from prefkit.data.validate import check_files
from prefkit.errors import PrefkitError

_names = itertools.count()
FILE_LEVEL = {"empty_file", "empty_folder"}  # problems of a whole file: no line applies


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory(prefix="prefkit-fuzz-") as folder:
        yield Path(folder)


def _write(folder: Path, suffix: str, data: bytes) -> Path:
    path = folder / f"f{next(_names)}{suffix}"
    path.write_bytes(data)
    return path


def _located(problems) -> None:
    for problem in problems:
        if problem.kind not in FILE_LEVEL:
            assert problem.location.line is not None, problem
            assert re.match(r".+:\d+: ", str(problem)), problem


@pytest.mark.slow
@FUZZ
@given(data_files)
def test_any_file_reads_and_parses_to_located_problems(workdir, file):
    path = _write(workdir, *file)
    try:
        raw = read_records(path)
    except PrefkitError:
        return
    _located(raw.problems)
    assert raw.total >= len(raw.records)
    for stage in (None, "dpo", "sft"):
        try:
            parsed = parse_file(path, stage=stage)
        except PrefkitError as err:
            assert str(err) and "Traceback" not in str(err)
            continue
        _located(parsed.problems)
        # Every record is counted, whether it became an example or a problem.
        assert parsed.records == raw.total and len(parsed.examples) <= parsed.records


@FUZZ
@given(data_files)
def test_data_check_and_training_agree_on_any_file(workdir, tokenizer, file):
    path = _write(workdir, *file)
    try:
        report = check_data([path])
    except PrefkitError:
        return
    _located(report.problems)
    assert 0 <= report.usable <= report.records or not report.records
    # With a tokenizer (what `data check --model` and `train` do), then training's own verdict.
    encoder = ChatEncoder(tokenizer, None, 64)
    try:
        parsed = parse_file(path, stage=report.stage)
    except PrefkitError:
        return
    checked = check_files([parsed], report.stage, encoder)
    _located(checked.problems)
    config = load_config(None, [f"train_file={path}", f"stage={report.stage}", "cutoff_len=64"])
    try:
        prepared = prepare_data(config, tokenizer)
    except DataError:
        assert not checked.ok or checked.usable == 0
    else:
        assert checked.ok and len(prepared.train) == checked.usable


@FUZZ
@given(chat_files())
def test_chat_records_in_any_turn_order_are_examples_or_located_problems(workdir, tokenizer, data):
    """Issue #25: well-formed chat records with any order of roles, lone surrogates and system prompts in
    places prefkit does and does not read. `data check --model` crashed on an assistant turn first and on a
    surrogate in a plain-text reply, and let repeated roles pass without a word."""
    path = _write(workdir, ".jsonl", data)
    parsed = parse_file(path)
    report = check_files([parsed], parsed.stage or "dpo", ChatEncoder(tokenizer, None, 64))
    _located(report.problems)
    unusable = {p.location.line for p in report.errors}
    assert report.usable + len(unusable) == report.records  # each record: an example, or an error at its line
    warned = {p.location.line for p in report.problems if p.kind == "role_order"}
    for example in parsed.examples:
        turns = example.prompt if isinstance(example, PreferenceExample) else example.messages
        roles = [m.role for m in turns if m.role != "system"]
        assert roles[0] == "user", example  # an assistant turn first is refused
        repeated = any(a == b for a, b in itertools.pairwise(roles))
        assert repeated == (example.location.line in warned), example


@FUZZ
@given(yaml_texts(), overrides)
def test_any_config_is_loaded_or_refused_with_located_problems(workdir, text, extra):
    path = workdir / f"c{next(_names)}.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_config(path, extra)
    except ConfigError as err:
        for problem in err.problems:
            assert problem.startswith((f"{path}:", "command line:")), problem
            assert len(problem) < 2000, problem[:200]
    except PrefkitError:
        pass


@FUZZ
@given(dataset_infos())
def test_any_dataset_info_resolves_or_is_refused(workdir, text):
    folder = workdir / f"d{next(_names)}"
    folder.mkdir()
    (folder / "pairs.jsonl").write_text('{"instruction": "q", "chosen": "a", "rejected": "b"}\n')
    (folder / "sub").mkdir()
    (folder / "dataset_info.json").write_text(text, encoding="utf-8", errors="surrogatepass")
    for name in ("d", "e", ""):
        try:
            spec = resolve_dataset(name, folder)
        except PrefkitError as err:
            assert "root:" not in str(err)  # never a line of /etc/passwd
            continue
        assert all(p.resolve().is_relative_to(folder.resolve()) for p in spec.paths)


runner = CliRunner()


@pytest.mark.slow
@FUZZ
@given(data_files)
def test_the_data_check_command_never_shows_a_traceback(workdir, file):
    path = _write(workdir, *file)
    result = runner.invoke(app, ["data", "check", str(path), "--limit", "5"])
    assert result.exit_code in (0, 1, 2), result.output[-2000:]
    assert "Traceback" not in result.output and "internal error" not in result.output
