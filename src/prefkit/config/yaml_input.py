"""Reading YAML with line numbers: the top-level entries of a config file, each with ``file:line``, and
``key=value`` overrides from the command line."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import yaml

from prefkit.config.keys import COMMAND_LINE, ConfigError

_FLOAT_WITHOUT_DOT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-5` as a float.  PyYAML follows YAML 1.1, where a float needs a dot
    (`1.0e-5`), so `learning_rate: 1e-5` would otherwise arrive as the string '1e-5'."""


YamlLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_WITHOUT_DOT, list("-+0123456789"))


@dataclasses.dataclass
class Entry:
    key: str  # as the user wrote it
    value: Any
    origin: str  # "cfg.yaml:12" or "command line"
    order: int  # file line, or a number after every line for the command line
    text: str | None = None  # the override as typed, for messages


def read_yaml(path: str) -> tuple[list[Entry], list[tuple[int, str]]]:
    """The top-level entries of a YAML file, each with its line, and the duplicate-key problems."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None

    loader = YamlLoader(text)
    try:
        # Composing (not constructing) keeps the node tree, and with it each key's line.
        root = loader.get_single_node()
        if root is None:  # an empty file: every key keeps its default
            return [], []
        if not isinstance(root, yaml.MappingNode):
            kind = "a list" if isinstance(root, yaml.SequenceNode) else "a single value"
            raise ConfigError(
                f"{path}:{root.start_mark.line + 1}: the top level is {kind}; a config file must be a "
                "mapping of `key: value` lines"
            )
        entries: list[Entry] = []
        problems: list[tuple[int, str]] = []
        first_line: dict[Any, int] = {}
        for key_node, value_node in root.value:
            line = key_node.start_mark.line + 1
            key = loader.construct_object(key_node, deep=True)
            value = loader.construct_object(value_node, deep=True)
            if not isinstance(key, str):
                problems.append((line, f"{path}:{line}: key {key!r} is not a name"))
                continue
            if key in first_line:
                problems.append(
                    (line, f"{path}:{line}: duplicate key {key!r} (first given on line {first_line[key]})")
                )
            else:
                first_line[key] = line
            entries.append(Entry(key, value, f"{path}:{line}", line))
        return entries, problems
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        problem = exc.problem or exc.context or "cannot be parsed"
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()


def parse_override(text: str) -> tuple[str, Any]:
    """``"learning_rate=1e-5"`` -> ``("learning_rate", 1e-05)``.  The value is read as YAML, so
    ``lora_target=[q_proj,v_proj]``, ``bf16=true`` and ``resume_from_checkpoint=null`` work."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{COMMAND_LINE}: expected key=value, got {text!r}")
    try:
        value = yaml.load(raw.strip(), Loader=YamlLoader)  # YamlLoader is a SafeLoader
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{COMMAND_LINE}: invalid value in {text!r}: {problem}") from None
    return key, value
