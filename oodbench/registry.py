"""One decorator registry for detectors, threat models, data sets and architectures (timm-style).

@register_detector("msp")
class MSP(Detector): ...

DETECTORS.get("mps")  # UnknownNameError: unknown detector 'mps'; did you mean 'msp'?
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from oodbench.errors import UnknownNameError


@dataclass(frozen=True)
class Entry:
    """A registered object with the one-line summary that `oodbench list` prints."""

    name: str
    obj: Any
    summary: str
    meta: dict


class Registry:
    """A name -> object mapping filled by decorators; unknown names raise with a did-you-mean hint."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, summary: str = "", **meta: Any) -> Callable[[Any], Any]:
        """Decorator registering a class or factory under `name` (lower-case, unique per registry)."""

        def decorator(obj: Any) -> Any:
            if name in self._entries and self._entries[name].obj is not obj:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            doc = (obj.__doc__ or "").strip().splitlines()
            self._entries[name] = Entry(name, obj, summary or (doc[0] if doc else ""), dict(meta))
            return obj

        return decorator

    def get(self, name: str) -> Any:
        """The object registered as `name`."""
        return self.entry(name).obj

    def entry(self, name: str) -> Entry:
        """The registry entry of `name`, or UnknownNameError naming the closest known names."""
        load_plugins()
        if name not in self._entries:
            raise UnknownNameError(self.unknown_message(name))
        return self._entries[name]

    def unknown_message(self, name: str) -> str:
        """'unknown detector 'x'; did you mean ...? Known: ...' for a name that is not registered."""
        close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} '{name}'{hint} (known: {', '.join(sorted(self._entries))})"

    def names(self) -> list[str]:
        """Registered names in registration order."""
        load_plugins()
        return list(self._entries)

    def entries(self) -> Iterator[Entry]:
        load_plugins()
        return iter(list(self._entries.values()))

    def __contains__(self, name: object) -> bool:
        load_plugins()
        return name in self._entries


DETECTORS = Registry("detector")
THREATS = Registry("threat model")
DATASETS = Registry("data set")
ARCHS = Registry("architecture")

register_detector = DETECTORS.register
register_threat = THREATS.register
register_dataset = DATASETS.register
register_arch = ARCHS.register

_PLUGIN_MODULES = (
    "oodbench.models",
    "oodbench.data",
    "baselines",
    "attacks.natural",
    "attacks.linf",
    "attacks.corruption",
    "attacks.joint",
    "oodbench.toy",
)
_loaded = False


def load_plugins() -> None:
    """Import the modules whose decorators fill the registries (idempotent)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib

    for module in _PLUGIN_MODULES:
        importlib.import_module(module)
