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
    emit = warn or _default_warn
    warned: set[str] = set()

    def warn_once(tag: str, message: str) -> None:
        if tag not in warned:
            warned.add(tag)
            emit(message)

    file_name = os.fspath(path) if path is not None else None
    problems: list[tuple[int, str]] = []
    entries: list[Entry] = []
    if file_name is not None:
        entries, problems = read_yaml(file_name)
    first_override = (entries[-1].order if entries else 0) + 10**9
    for index, text in enumerate(overrides):
        order = first_override + index
        try:
            key, value = parse_override(text)
        except ConfigError as exc:
            problems.append((order, str(exc)))
            continue
        entries.append(Entry(key, value, COMMAND_LINE, order, text))

    config_keys = frozenset(Config.model_fields) - RESERVED_KEYS
    values: dict[str, Any] = {}  # canonical key -> value, later entries winning
    origins: dict[str, str] = {}
    orders: dict[str, int] = {}
    passthrough: set[str] = set()
    # Which spelling set each canonical key within one layer (the file, or the command line), to catch
    # `evaluation_strategy` and `eval_strategy` given together.
    spelled: dict[tuple[bool, str], Entry] = {}

    for entry in entries:
        key = entry.key
        bad = non_finite(entry.value)
        if bad is not None:
            # inf and nan pass most type checks and then wreck training (or crash a validator).
            shown = short_repr(entry.key, quote=False)
            problems.append(
                (entry.order, f"{entry.origin}: {shown}: got {yaml_scalar(bad)} -- expected a finite number")
            )
            continue
        value = entry.value
        if key in config_keys:
            canonical = key
        elif key in REPLACED_FLAGS:
            canonical, on, off = REPLACED_FLAGS[key]
            if value not in (True, False):  # 1 and 0 too, as booleans elsewhere in the config
                shown = short_repr(key, quote=False)
                problems.append(
                    (
                        entry.order,
                        f"{entry.origin}: {shown}: got {yaml_scalar(value)} -- expected true or false",
                    )
                )
                continue
            value = on if value else off
            warn_once(
                f"replaced:{key}",
                f"{entry.origin}: '{key}' was replaced by '{canonical}' in transformers 5; read as "
                f"{canonical}: {value}",
            )
        elif key in RENAMED_KEYS:
            canonical = RENAMED_KEYS[key]
            warn_once(
                f"renamed:{key}",
                f"{entry.origin}: '{key}' was renamed to '{canonical}' in transformers; "
                f"read as {canonical}: {yaml_scalar(entry.value)}",
            )
        elif key in IGNORED_KEYS:
            warn_once(f"ignored:{key}", f"{entry.origin}: '{key}' is ignored -- {IGNORED_KEYS[key]}")
            continue
        elif key not in RESERVED_KEYS and key in training_argument_names():
            canonical = key
        else:
            problems.append((entry.order, unknown_key_message(entry, config_keys)))
            continue

        current = DEPRECATED_ALIASES.get(canonical, canonical)
        layer = (entry.origin == COMMAND_LINE, current)
        earlier = spelled.get(layer)
        if earlier is not None and earlier.key != entry.key:
            problems.append(
                (
                    entry.order,
                    f"{entry.origin}: '{entry.key}' and '{earlier.key}' ({earlier.origin}) both set "
                    f"{current} -- keep only '{current}'",
                )
            )
        spelled[layer] = entry
        values[canonical] = value
        origins[canonical] = entry.origin
        orders[canonical] = entry.order
        if canonical not in config_keys:
            passthrough.add(canonical)

    # A deprecated TrainingArguments name and its current one, given in different layers: the later (the
    # command line) wins, as for any key. Each stays spelled as written, for resume and sweep checks.
    for old, new in DEPRECATED_ALIASES.items():
        if old in passthrough and new in passthrough:
            overridden = min(old, new, key=orders.__getitem__)
            passthrough.discard(overridden)
            for table in (values, origins, orders):
                del table[overridden]

    training_arguments: dict[str, Any] = {}
    for key in sorted(passthrough, key=orders.__getitem__):
        checked, problem = validate_training_argument(key, values.pop(key))
        if problem:
            problems.append((orders[key], f"{origins[key]}: {problem}"))
        else:
            training_arguments[key] = checked

    context = {"defer_cross_checks": True}
    data = {**values, "training_arguments": training_arguments, "config_file": file_name}
    config: Config | None = None
    try:
        config = Config.model_validate(data, context=context)
    except ValidationError as exc:
        by_key: dict[str, list[dict[str, Any]]] = {}
        for error in exc.errors():
            key = str(error["loc"][0]) if error["loc"] else ""
            by_key.setdefault(key, []).append(dict(error))
        for key, errors in by_key.items():
            if key in values:
                where = origins[key]
                problems.append((orders[key], f"{where}: {field_problem(key, values[key], errors)}"))
            else:  # not expected: every user key is in `values`
                problems.append((0, "; ".join(f"{key}: {e['msg']}" for e in errors)))
        # Validate again without the bad keys, so cross-key problems show up in this same report.
        good = {k: v for k, v in data.items() if k not in by_key}
        try:
            config = Config.model_validate(good, context=context)
        except ValidationError:
            config = None

    if config is not None:
        for keys, message in config._cross_field_problems():
            given = [k for k in keys if k in origins]
            # Report at the last of the keys the user wrote: that is usually the one just added.
            at = max(given, key=orders.__getitem__) if given else None
            where = origins[at] if at else "config"
            problems.append((orders[at] if at else 0, f"{where}: {message}"))

    if problems:
        problems.sort(key=lambda item: item[0])
        raise ConfigError([message for _, message in problems])
    assert config is not None  # no problems means the first validation succeeded

    if "simpo_gamma" in values and config.pref_loss != "simpo":
        warn_once(
            "unused:simpo_gamma",
            f"{origins['simpo_gamma']}: simpo_gamma is only used by pref_loss: simpo; "
            f"ignored with pref_loss: {config.pref_loss}",
        )
    config._origins = origins
    return config
