"""The `prefkit` command: a thin skin over package functions (parse, call, print; no logic here).
:mod:`~prefkit.cli.commands` holds the app and the training/data/eval commands; ``use`` the model commands
(chat, generate, export), ``serve`` the servers, ``sweep`` the sweep; ``common`` and ``options`` what
they share.

May import every layer."""

from prefkit.cli.commands import app, main

__all__ = ["app", "main"]
