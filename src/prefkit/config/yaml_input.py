"""Reading YAML with line numbers: the top-level entries of a config file, each with ``file:line``, and
``key=value`` overrides from the command line.

A config is read as a hostile file would be: control characters, aliases that expand exponentially
("billion laughs"), nesting deep enough to exhaust the stack and numbers too long to convert all become a
``file:line`` problem, never a traceback or a machine brought to its knees."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import yaml

from prefkit.config.keys import COMMAND_LINE, ConfigError

_FLOAT_WITHOUT_DOT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")

# Far beyond any real config (LLaMA-Factory's nest two levels), far below what hurts.
MAX_DEPTH = 32
MAX_VALUES = 10_000  # scalars, lists and mappings after aliases are expanded
MAX_DIGITS = 100  # an integer longer than this is a mistake (and past 4300 digits Python refuses it)


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


def _loader(text: str, where: str) -> YamlLoader:
    """A loader over ``text``; PyYAML checks every character up front and refuses control characters
    (a NUL, an ESC): that becomes a message with the line, not a ReaderError traceback."""
    try:
        return YamlLoader(text)
    except yaml.reader.ReaderError as exc:
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        line = text.count("\n", 0, max(exc.position, 0)) + 1
        at = f"{where}:{line}" if not where.startswith(COMMAND_LINE) else where
        raise ConfigError(
            f"{at}: control character U+{code:04X} is not allowed in YAML "
            "(is this a binary file, or was it pasted from a terminal?)"
        ) from None


def _too_big(node: yaml.Node) -> str | None:
    """Why ``node`` must not be constructed (too deep, too many values once aliases expand, an alias
    inside its own anchor), or None.

    A depth-first walk with an explicit stack, so a deep tree cannot exhaust Python's; an alias is the
    same node object as its anchor, so each node is entered once and the expanded size is summed over
    node identities -- a bomb is measured, never materialised."""
    sizes: dict[int, int] = {}
    entered: set[int] = set()
    stack: list[tuple[yaml.Node, int, bool]] = [(node, 1, False)]
    while stack:
        current, depth, leaving = stack.pop()
        children = (
            []
            if isinstance(current, yaml.ScalarNode)
            else [item for pair in current.value for item in pair]
            if isinstance(current, yaml.MappingNode)
            else list(current.value)
        )
        if leaving:
            sizes[id(current)] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[id(current)] > MAX_VALUES:
                return (
                    f"expands to more than {MAX_VALUES:,} values (anchors and aliases repeated inside "
                    "each other, a 'billion laughs' file?)"
                )
            continue
        if id(current) in sizes:
            continue  # an alias of a node already measured
        if id(current) in entered:
            return "holds an alias inside its own anchor (a value that contains itself)"
        if depth > MAX_DEPTH:
            return f"nested more than {MAX_DEPTH} levels deep"
        entered.add(id(current))
        stack.append((current, depth, True))
        stack.extend((child, depth + 1, False) for child in children)
    return None


def _long_number(node: yaml.Node) -> yaml.Node | None:
    """The first integer scalar in ``node`` with more than MAX_DIGITS digits."""
    stack, seen = [node], set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, yaml.ScalarNode):
            digits = sum(c.isdigit() for c in current.value)
            if current.tag == "tag:yaml.org,2002:int" and digits > MAX_DIGITS:
                return current
        elif isinstance(current, yaml.MappingNode):
            stack.extend(item for pair in current.value for item in pair)
        else:
            stack.extend(current.value)
    return None


class DuplicateKeyError(ValueError):
    """A key given twice in one mapping inside a value (``columns:`` with ``prompt`` twice): YAML loaders
    keep the last one without a word, so the first would be ignored silently."""

    def __init__(self, key: Any, line: int, first_line: int) -> None:
        super().__init__(f"duplicate key {short_repr(key)}")
        self.line = line  # 1-based, of the second one
        self.first_line = first_line


def _duplicate_key(loader: YamlLoader, node: yaml.Node) -> DuplicateKeyError | None:
    """The first key (by line) given twice in any mapping inside ``node``, at any depth."""
    found: list[DuplicateKeyError] = []
    stack, seen = [node], set()
    while stack:
        current = stack.pop()
        if id(current) in seen or isinstance(current, yaml.ScalarNode):
            continue
        seen.add(id(current))
        if isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)
            continue
        first: dict[Any, int] = {}
        for key_node, value_node in current.value:
            stack.extend((key_node, value_node))
            # `<<: *base` merges another mapping, whose keys the explicit ones override: that is YAML's
            # own way to override, not a mistake.
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            try:
                key = loader.construct_object(key_node)
                hash(key)
            except (yaml.YAMLError, ValueError, OverflowError, TypeError):
                continue  # constructing the whole value reports it
            line = key_node.start_mark.line + 1
            if key in first:
                found.append(DuplicateKeyError(key, line, first[key]))
            else:
                first[key] = line
    return min(found, key=lambda d: d.line, default=None)


def _construct(loader: YamlLoader, node: yaml.Node) -> Any:
    """The Python value of one checked node; a ValueError names what is wrong with it (a
    :class:`DuplicateKeyError` a key given twice inside it)."""
    problem = _too_big(node)
    if problem:
        raise ValueError(problem)
    duplicate = _duplicate_key(loader, node)
    if duplicate is not None:
        raise duplicate
    long = _long_number(node)
    if long is not None:
        digits = sum(c.isdigit() for c in long.value)
        raise ValueError(f"a {digits}-digit integer (over {MAX_DIGITS} digits is surely a mistake)")
    try:
        return loader.construct_object(node, deep=True)
    except RecursionError:
        raise ValueError(f"nested more than {MAX_DEPTH} levels deep") from None
    except yaml.YAMLError as exc:  # e.g. a tag such as !!python/object that safe loading refuses
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValueError(f"cannot read the value: {problem[:200]}") from None
    except (ValueError, OverflowError, TypeError) as exc:  # e.g. a timestamp like 2024-13-45
        raise ValueError(f"cannot read the value: {str(exc)[:200]}") from None


def non_finite(value: Any) -> float | None:
    """The first inf/nan float in ``value`` (a scalar, or inside lists and mappings), or None."""
    stack = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, float) and not math.isfinite(current):
            return current
        if isinstance(current, dict):
            stack.extend(current.values())
        elif isinstance(current, list | tuple):
            stack.extend(current)
    return None


def _compose(loader: YamlLoader, text: str, where: str) -> yaml.Node | None:
    """The node tree of ``text`` (None for an empty document), or a ConfigError at its line."""
    try:
        return loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f"{where}:{mark.line + 1}" if mark is not None and where != COMMAND_LINE else where
        problem = exc.problem or exc.context or "cannot be parsed"
        raise ConfigError(f"{at}: invalid YAML: {problem}") from None
    except RecursionError:
        at = f"{where}:{loader.line + 1}" if where != COMMAND_LINE else where
        raise ConfigError(f"{at}: invalid YAML: nested more than {MAX_DEPTH} levels deep") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: invalid YAML: {str(exc)[:300]}") from None


def read_yaml(path: str) -> tuple[list[Entry], list[tuple[int, str]]]:
    """The top-level entries of a YAML file, each with its line, and the problems met reading them."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None

    loader = _loader(text, path)
    try:
        # Composing (not constructing) keeps the node tree, and with it each key's line.
        root = _compose(loader, text, path)
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
            try:
                key = _construct(loader, key_node)
            except ValueError as exc:
                problems.append((line, f"{path}:{line}: key: {exc}"))
                continue
            if not isinstance(key, str):
                problems.append((line, f"{path}:{line}: key {short_repr(key)} is not a name"))
                continue
            try:
                value = _construct(loader, value_node)
            except ValueError as exc:
                at, problem = line, str(exc)
                if isinstance(exc, DuplicateKeyError):  # at the nested key's own line
                    at, problem = exc.line, f"{exc} (first given on line {exc.first_line})"
                problems.append((at, f"{path}:{at}: {short_repr(key, 60, quote=False)}: {problem}"))
                continue
            if key in first_line:
                problems.append(
                    (
                        line,
                        f"{path}:{line}: duplicate key {short_repr(key)} "
                        f"(first given on line {first_line[key]})",
                    )
                )
            else:
                first_line[key] = line
            entries.append(Entry(key, value, f"{path}:{line}", line))
        return entries, problems
    finally:
        loader.dispose()


def parse_override(text: str) -> tuple[str, Any]:
    """``"learning_rate=1e-5"`` -> ``("learning_rate", 1e-05)``.  The value is read as YAML, so
    ``lora_target=[q_proj,v_proj]``, ``bf16=true`` and ``resume_from_checkpoint=null`` work."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    shown = short_repr(text)
    if not sep or not key:
        raise ConfigError(f"{COMMAND_LINE}: expected key=value, got {shown}")
    loader = _loader(raw.strip(), f"{COMMAND_LINE}: invalid value in {shown}")
    try:
        node = _compose(loader, raw, COMMAND_LINE)
        if node is None:
            return key, None
        try:
            return key, _construct(loader, node)
        except ValueError as exc:
            raise ConfigError(f"{COMMAND_LINE}: invalid value in {shown}: {exc}") from None
    except ConfigError as exc:
        message = str(exc)
        if message.startswith(f"{COMMAND_LINE}: invalid YAML: "):
            problem = message.removeprefix(f"{COMMAND_LINE}: invalid YAML: ")
            raise ConfigError(f"{COMMAND_LINE}: invalid value in {shown}: {problem}") from None
        raise
    finally:
        loader.dispose()


def short_repr(value: Any, limit: int = 80, *, quote: bool = True) -> str:
    """``repr(value)`` cut to about ``limit`` characters, for messages: a value may be megabytes long (or a
    'billion laughs' of nested lists), so the repr is built piecewise, never whole."""
    try:
        text = value if isinstance(value, str) and not quote else _preview(value, 2 * limit)
    except RecursionError:
        return f"a {type(value).__name__} nested too deeply to show"
    return text if len(text) <= limit else text[: limit - 4] + " ..."


def _preview(value: Any, budget: int) -> str:
    """A repr of at most about ``budget`` characters."""
    if isinstance(value, dict | list | tuple):
        items = value.items() if isinstance(value, dict) else value
        opening, closing = ("{", "}") if isinstance(value, dict) else ("[", "]")
        parts: list[str] = []
        used = 0
        for item in items:
            if used > budget:
                parts.append("...")
                break
            part = (
                f"{_preview(item[0], 40)}: {_preview(item[1], budget - used)}"
                if isinstance(value, dict)
                else _preview(item, budget - used)
            )
            parts.append(part)
            used += len(part) + 2
        return opening + ", ".join(parts) + closing
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 1000:
        return "<a very long integer>"  # repr() itself fails past 4300 digits
    if isinstance(value, str) and len(value) > budget:
        return repr(value[: max(budget, 0)])[:-1] + "...'"
    return repr(value)
