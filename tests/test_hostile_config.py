"""Regressions for the config findings of issue #11: hostile YAML and values are `file:line` problems,
never a traceback, and never a machine brought down by an alias bomb."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from prefkit.config import Config, ConfigError, load_config

# The 750-byte "billion laughs": nine levels of nine aliases, 9**9 values once expanded.
BOMB = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
)


def problems(tmp_path: Path, text: str, *overrides: str) -> list[str]:
    path = tmp_path / "cfg.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path, list(overrides))
    return [line.replace(str(path), "cfg.yaml") for line in err.value.problems]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("learning_rate: .inf", "cfg.yaml:1: learning_rate: got .inf -- expected a finite number"),
        ("stage: dpo\npref_beta: .nan", "cfg.yaml:2: pref_beta: got .nan -- expected a finite number"),
        ("pref_ftx: 1e400", "cfg.yaml:1: pref_ftx: got .inf -- expected a finite number"),
        ("weight_decay: -.inf", "cfg.yaml:1: weight_decay: got -.inf -- expected a finite number"),
        ("val_size: .inf", "cfg.yaml:1: val_size: got .inf -- expected a finite number"),
        ("num_train_epochs: .inf", "cfg.yaml:1: num_train_epochs: got .inf -- expected a finite number"),
        ("seed: -1", "cfg.yaml:1: seed: got -1 -- expected an integer from 0 to 4294967295"),
        ("seed: 4294967296", "cfg.yaml:1: seed: got 4294967296 -- expected an integer from 0 to 4294967295"),
        ("output_dir: ''", "cfg.yaml:1: output_dir: got '' -- expected the path of a folder"),
        (
            "seed: " + "9" * 5000,
            "cfg.yaml:1: seed: a 5000-digit integer (over 100 digits is surely a mistake)",
        ),
        ("seed: 1\nx: \x00", "cfg.yaml:2: control character U+0000 is not allowed in YAML"),
        ("seed: !!python/object:os.system", "cfg.yaml:1: seed: cannot read the value: could not determine"),
        ("report_to: \x1b[31mnone", "cfg.yaml:1: control character U+001B is not allowed in YAML"),
        ("stage: dpo\nlora_target: " + "[" * 1000 + "]" * 1000, "cfg.yaml:2: invalid YAML: nested more than"),
        (BOMB + "\nlora_target: *i", "cfg.yaml:10: lora_target: expands to more than 10,000 values"),
    ],
)
def test_hostile_values_are_file_line_problems(tmp_path, text, expected):
    found = problems(tmp_path, text)
    assert any(p.startswith(expected) for p in found), found


def test_the_750_byte_alias_bomb_is_refused_at_its_line(tmp_path):
    assert len(BOMB.encode()) < 800
    found = problems(tmp_path, BOMB)
    assert found[-1].startswith("cfg.yaml:9: i: expands to more than 10,000 values")
    assert sum(len(p) for p in found) < 5_000  # no 2 GB of error text


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("lora_target=" + "[" * 1000 + "]" * 1000, "nested more than 32 levels deep"),
        ("seed=\x00", "control character U+0000 is not allowed"),
        ("learning_rate=1e400", "learning_rate: got .inf -- expected a finite number"),
        (
            "learning_rate=!!python/object:os.system",
            "cannot read the value: could not determine a constructor",
        ),
        ("lora_target=[" + ",".join(["x"] * 20_000) + "]", "expands to more than 10,000 values"),
    ],
)
@pytest.mark.slow
def test_hostile_overrides_are_problems(tmp_path, override, expected):
    found = problems(tmp_path, "stage: dpo", override)
    assert any(expected in p for p in found) and all(len(p) < 500 for p in found), found


def test_a_config_built_in_python_refuses_non_finite_numbers_too():
    with pytest.raises(ValidationError, match="finite_number"):
        Config(val_size=float("inf"))  # was an OverflowError from int(inf)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("stage: dpo\nseed: 1\nstage: sft", "cfg.yaml:3: duplicate key 'stage' (first given on line 1)"),
        (
            "stage: dpo\ncolumns:\n  prompt: question\n  chosen: good\n  prompt: query\n",
            "cfg.yaml:5: columns: duplicate key 'prompt' (first given on line 3)",
        ),
        (
            "columns: {prompt: a, 'prompt': b}",
            "cfg.yaml:1: columns: duplicate key 'prompt' (first given on line 1)",
        ),
        (  # any depth, inside lists too: the line is the repeated key's own
            "lora_target:\n  - a\n  - x:\n      y: 1\n      z: 2\n      y: 3\n",
            "cfg.yaml:6: lora_target: duplicate key 'y' (first given on line 4)",
        ),
    ],
)
def test_a_key_given_twice_at_any_depth_is_refused(tmp_path, text, expected):
    """Issue #25: a key repeated inside `columns` was read as the last one, silently; the top level was
    already refused."""
    found = problems(tmp_path, text)
    assert any(p.startswith(expected) for p in found), found


def test_a_key_given_twice_on_the_command_line_is_refused(tmp_path):
    found = problems(tmp_path, "stage: dpo", "columns={prompt: a, prompt: b}")
    assert found == [
        "command line: invalid value in 'columns={prompt: a, prompt: b}': duplicate key 'prompt'"
    ]


def test_a_merge_key_is_yaml_s_way_to_override_not_a_duplicate(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(
        "stage: dpo\ncolumns:\n  <<: {prompt: question, chosen: good}\n  prompt: query\n", encoding="utf-8"
    )
    assert load_config(path, []).columns == {"prompt": "query", "chosen": "good"}
