"""``load_config``: a YAML file plus ``key=value`` overrides, every problem collected and reported at once,
each as ``file:line: key: got X -- expected Y``, because a user fixing a config one error per run is the
thing this package exists to prevent."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

from prefkit.config.keys import (
    COMMAND_LINE,
    IGNORED_KEYS,
    RENAMED_KEYS,
    REPLACED_FLAGS,
    RESERVED_KEYS,
    ConfigError,
)
from prefkit.config.messages import field_problem, unknown_key_message
from prefkit.config.passthrough import (
    DEPRECATED_ALIASES,
    training_argument_names,
    validate_training_argument,
)
from prefkit.config.schema import Config
from prefkit.config.words import yaml_scalar
from prefkit.config.yaml_input import Entry, non_finite, parse_override, read_yaml, short_repr

logger = logging.getLogger(__name__)


def _default_warn(message: str) -> None:
    # Like the warnings module's "default" action: a message is shown once per process, so a config loaded
    # twice (the CLI, then a subprocess-less trainer) does not repeat itself.
    if message not in _WARNED:
        _WARNED.add(message)
        logger.warning(message)


_WARNED: set[str] = set()


def load_config(
    path: str | os.PathLike[str] | None,
    overrides: Sequence[str] = (),
    *,
    warn: Callable[[str], None] | None = None,
) -> Config:
    """Read a config from a YAML file (or none), apply ``key=value`` overrides, validate everything, and
    raise one :class:`ConfigError` listing every problem -- or return the :class:`Config`.

    Warnings (renamed keys, keys prefkit ignores) go to ``warn``, each once; by default they are logged."""
    file_name = os.fspath(path) if path is not None else None
    keys = _Keys(_Warnings(warn or _default_warn))
    for entry in _entries(file_name, overrides, keys.problems):
        keys.add(entry)
    keys.keep_later_aliases()
    training_arguments = keys.training_arguments()
    config = _validate(
        keys, {**keys.values, "training_arguments": training_arguments, "config_file": file_name}
    )
    if config is not None:
        keys.add_cross_field_problems(config)
    if keys.problems:
        keys.problems.sort(key=lambda item: item[0])
        raise ConfigError([message for _, message in keys.problems])
    assert config is not None  # no problems means the first validation succeeded

    if "simpo_gamma" in keys.values and config.pref_loss != "simpo":
        keys.warn(
            "unused:simpo_gamma",
            f"{keys.origins['simpo_gamma']}: simpo_gamma is only used by pref_loss: simpo; "
            f"ignored with pref_loss: {config.pref_loss}",
        )
    config._origins = keys.origins
    return config


Problems = list[tuple[int, str]]  # (order of the entry at fault, message): reported sorted, all at once


class _Warnings:
    """Each warning once per load (by tag), passed on to the caller's ``warn``."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit = emit
        self.given: set[str] = set()

    def __call__(self, tag: str, message: str) -> None:
        if tag not in self.given:
            self.given.add(tag)
            self.emit(message)


def _entries(file_name: str | None, overrides: Sequence[str], problems: Problems) -> list[Entry]:
    """The file's entries, then the command line's ``key=value`` overrides, in the order they apply."""
    entries: list[Entry] = []
    if file_name is not None:
        entries, found = read_yaml(file_name)
        problems += found
    first_override = (entries[-1].order if entries else 0) + 10**9
    for index, text in enumerate(overrides):
        order = first_override + index
        try:
            key, value = parse_override(text)
        except ConfigError as exc:
            problems.append((order, str(exc)))
            continue
        entries.append(Entry(key, value, COMMAND_LINE, order, text))
    return entries


class _Keys:
    """The entries read into canonical keys: each key's value, where it was set and in which order (later
    entries win), and which of them are TrainingArguments passed through."""

    def __init__(self, warn: _Warnings) -> None:
        self.warn = warn
        self.config_keys = frozenset(Config.model_fields) - RESERVED_KEYS
        self.problems: Problems = []
        self.values: dict[str, Any] = {}
        self.origins: dict[str, str] = {}
        self.orders: dict[str, int] = {}
        self.passthrough: set[str] = set()
        # Which spelling set each canonical key within one layer (the file, or the command line), to catch
        # `evaluation_strategy` and `eval_strategy` given together.
        self.spelled: dict[tuple[bool, str], Entry] = {}

    def add(self, entry: Entry) -> None:
        bad = non_finite(entry.value)
        if bad is not None:
            # inf and nan pass most type checks and then wreck training (or crash a validator).
            shown = short_repr(entry.key, quote=False)
            self.problems.append(
                (entry.order, f"{entry.origin}: {shown}: got {yaml_scalar(bad)} -- expected a finite number")
            )
            return
        resolved = self._canonical(entry)
        if resolved is None:
            return
        canonical, value = resolved
        current = DEPRECATED_ALIASES.get(canonical, canonical)
        layer = (entry.origin == COMMAND_LINE, current)
        earlier = self.spelled.get(layer)
        if earlier is not None and earlier.key != entry.key:
            self.problems.append(
                (
                    entry.order,
                    f"{entry.origin}: '{entry.key}' and '{earlier.key}' ({earlier.origin}) both set "
                    f"{current} -- keep only '{current}'",
                )
            )
        self.spelled[layer] = entry
        self.values[canonical] = value
        self.origins[canonical] = entry.origin
        self.orders[canonical] = entry.order
        if canonical not in self.config_keys:
            self.passthrough.add(canonical)

    def _canonical(self, entry: Entry) -> tuple[str, Any] | None:
        """The key ``entry`` sets and its value (a replaced flag read into its successor); None for a key
        that is ignored or unknown (the latter a problem)."""
        key, value = entry.key, entry.value
        if key in self.config_keys:
            return key, value
        if key in REPLACED_FLAGS:
            canonical, on, off = REPLACED_FLAGS[key]
            if value not in (True, False):  # 1 and 0 too, as booleans elsewhere in the config
                shown = short_repr(key, quote=False)
                self.problems.append(
                    (
                        entry.order,
                        f"{entry.origin}: {shown}: got {yaml_scalar(value)} -- expected true or false",
                    )
                )
                return None
            value = on if value else off
            self.warn(
                f"replaced:{key}",
                f"{entry.origin}: '{key}' was replaced by '{canonical}' in transformers 5; read as "
                f"{canonical}: {value}",
            )
            return canonical, value
        if key in RENAMED_KEYS:
            canonical = RENAMED_KEYS[key]
            self.warn(
                f"renamed:{key}",
                f"{entry.origin}: '{key}' was renamed to '{canonical}' in transformers; "
                f"read as {canonical}: {yaml_scalar(value)}",
            )
            return canonical, value
        if key in IGNORED_KEYS:
            self.warn(f"ignored:{key}", f"{entry.origin}: '{key}' is ignored -- {IGNORED_KEYS[key]}")
            return None
        if key not in RESERVED_KEYS and key in training_argument_names():
            return key, value
        self.problems.append((entry.order, unknown_key_message(entry, self.config_keys)))
        return None

    def keep_later_aliases(self) -> None:
        """A deprecated TrainingArguments name and its current one, given in different layers: the later
        (the command line) wins, as for any key. Each stays spelled as written, for resume and sweep
        checks."""
        for old, new in DEPRECATED_ALIASES.items():
            if old in self.passthrough and new in self.passthrough:
                overridden = min(old, new, key=self.orders.__getitem__)
                self.passthrough.discard(overridden)
                for table in (self.values, self.origins, self.orders):
                    del table[overridden]

    def training_arguments(self) -> dict[str, Any]:
        """The passed-through TrainingArguments, checked, moved out of :attr:`values`."""
        checked_arguments: dict[str, Any] = {}
        for key in sorted(self.passthrough, key=self.orders.__getitem__):
            checked, problem = validate_training_argument(key, self.values.pop(key))
            if problem:
                self.problems.append((self.orders[key], f"{self.origins[key]}: {problem}"))
            else:
                checked_arguments[key] = checked
        return checked_arguments

    def add_cross_field_problems(self, config: Config) -> None:
        for keys, message in config._cross_field_problems():
            given = [k for k in keys if k in self.origins]
            # Report at the last of the keys the user wrote: that is usually the one just added.
            at = max(given, key=self.orders.__getitem__) if given else None
            where = self.origins[at] if at else "config"
            self.problems.append((self.orders[at] if at else 0, f"{where}: {message}"))


def _validate(keys: _Keys, data: dict[str, Any]) -> Config | None:
    """The Config, or None with the problems of each bad key added; then validated again without the bad
    keys, so that cross-key problems show up in the same report."""
    context = {"defer_cross_checks": True}
    try:
        return Config.model_validate(data, context=context)
    except ValidationError as exc:
        by_key: dict[str, list[dict[str, Any]]] = {}
        for error in exc.errors():
            key = str(error["loc"][0]) if error["loc"] else ""
            by_key.setdefault(key, []).append(dict(error))
        for key, errors in by_key.items():
            if key in keys.values:
                where = keys.origins[key]
                keys.problems.append(
                    (keys.orders[key], f"{where}: {field_problem(key, keys.values[key], errors)}")
                )
            else:  # not expected: every user key is in `values`
                keys.problems.append((0, "; ".join(f"{key}: {e['msg']}" for e in errors)))
        good = {k: v for k, v in data.items() if k not in by_key}
        try:
            return Config.model_validate(good, context=context)
        except ValidationError:
            return None
