"""Subcommands that live outside `oodbench.cli` (`check`, the tools' `bench`, `sanity`, `plot`): each module calls
`add_command(register)` when imported, and the command line calls every `register(subparsers)`. The list lives here,
below the command line, so that those modules never import `oodbench.cli` (no import cycle)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Register = Callable[[Any], None]

_REGISTERED: list[Register] = []


def add_command(register: Register) -> Register:
    """Record `register(subparsers)`, a function adding one subcommand to the `oodbench` parser (idempotent)."""
    if register not in _REGISTERED:
        _REGISTERED.append(register)
    return register


def registered_commands() -> list[Register]:
    """The recorded subcommand adders, in import order."""
    return list(_REGISTERED)
