"""prefkit's single run configuration: one typed :class:`Config` read from a YAML file plus ``key=value``
overrides from the command line.

The package, by concern: ``schema`` (the Config fields and their checks), ``yaml_input`` (reading YAML
with line numbers, and overrides), ``passthrough`` (any ``transformers.TrainingArguments`` field, checked
against its type), ``keys`` (renamed and ignored keys, value hints), ``messages`` and ``words`` (the
error sentences), ``loader`` (``load_config``, which ties them together).

The lowest layer: may import nothing of prefkit but :mod:`prefkit.errors`."""

from prefkit.config.keys import COMMAND_LINE, IGNORED_KEYS, RENAMED_KEYS, ConfigError
from prefkit.config.loader import load_config
from prefkit.config.schema import Config
from prefkit.config.yaml_input import parse_override

__all__ = [
    "COMMAND_LINE",
    "IGNORED_KEYS",
    "RENAMED_KEYS",
    "Config",
    "ConfigError",
    "load_config",
    "parse_override",
]
