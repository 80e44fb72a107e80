"""One decorator registry for detectors, threat models, data sets and architectures (timm-style).

@register_detector("msp")
class MSP(Detector): ...    # the decorator sets MSP.name = "msp": the name is written once

DETECTORS.get("mps")  # UnknownNameError: unknown detector 'mps'; did you mean 'msp'?

The registries fill themselves: `load_plugins` imports every module of the packages in `PLUGIN_PACKAGES`
(found with pkgutil, so a new file in `baselines/` or `attacks/` needs no edit anywhere else), then the
`oodbench.plugins` entry points of installed distributions. Entries list in the order a class declares
(`order`, e.g. the paper's Table 1 for detectors, the table's columns for threat models), then by registration.
"""

from __future__ import annotations

import difflib
import importlib
import os
import pkgutil
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oodbench.errors import ConfigError, UnknownNameError


@dataclass(frozen=True)
class Entry:
    """A registered object with the one-line summary that `oodbench list` prints."""

    name: str
    obj: Any
    summary: str
    meta: dict
    origin: str = "oodbench"  # "oodbench" (built in), "plugin MODULE" or "entry point NAME (DISTRIBUTION)"


class Registry:
    """A name -> object mapping filled by decorators; unknown names raise with a did-you-mean hint."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, summary: str = "", **meta: Any) -> Callable[[Any], Any]:
        """Decorator registering a class or factory under `name` (lower-case, unique per registry); `meta` are
        facts about it for generic code (e.g. `ablation=True` for a detector, `options=("init",)` for the
        keyword options an architecture takes from the protocol)."""

        def decorator(obj: Any) -> Any:
            if name in self._entries and self._entries[name].obj is not obj:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            if isinstance(obj, type):
                obj.name = name  # the one place a class's name is written
            doc = (obj.__doc__ or "").strip().splitlines()
            entry = Entry(name, obj, summary or (doc[0] if doc else ""), dict(meta), _origin(obj))
            self._entries[name] = entry
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
        return (
            f"unknown {self.kind} '{name}'{hint} (known: {', '.join(sorted(self._entries))}). Your own is registered "
            f'with oodbench.register_{REGISTER_SUFFIX.get(self.kind, "detector")}("{name}") in a module loaded by '
            f"--plugin MODULE (or $OODBENCH_PLUGINS), or by an '{ENTRY_POINT_GROUP}' entry point of your package"
        )

    def names(self) -> list[str]:
        """Registered names in their declared order (`order` of the class; ties: registration order)."""
        return [entry.name for entry in self.entries()]

    def entries(self) -> Iterator[Entry]:
        """Entries in their declared order (`order` of the class; ties: registration order)."""
        load_plugins()
        return iter(sorted(self._entries.values(), key=lambda entry: getattr(entry.obj, "order", DEFAULT_ORDER)))

    def declared(self, name: str, attribute: str, default: Any = None) -> Any:
        """What the object registered as `name` declares as `attribute` (e.g. a threat model's `order`, `title`,
        `cost`); `default` when it declares nothing or `name` is not registered (tables still render the results
        of a plugin that is not loaded)."""
        load_plugins()
        entry = self._entries.get(name)
        value = getattr(entry.obj, attribute, None) if entry is not None else None
        return default if value is None or value == "" else value

    def __contains__(self, name: object) -> bool:
        load_plugins()
        return name in self._entries


DETECTORS = Registry("detector")
THREATS = Registry("threat model")
DATASETS = Registry("data set")
ARCHS = Registry("architecture")


def threat_order(name: str) -> float:
    """Column position of a threat model in tables and its execution order within an OOD set (declared `order`)."""
    return float(THREATS.declared(name, "order", DEFAULT_ORDER))


def threat_title(name: str) -> str:
    """Column title of a threat model in tables (declared `title`, else its name)."""
    return str(THREATS.declared(name, "title", name))


def threat_cost(name: str) -> float:
    """Relative compute of one cell of a threat model (declared `cost`; natural = 1)."""
    return float(THREATS.declared(name, "cost", 8.0))


def default_threats() -> list[str]:
    """The threat models a run uses without `--threats`: those declaring `default = True`, in table order."""
    return [entry.name for entry in THREATS.entries() if getattr(entry.obj, "default", False)]


def resolve_methods(names: list[str]) -> list[str]:
    """Detector names with `all` expanded (the paper's ten; ablations such as AT and the detectors of a group
    beyond the paper are named explicitly) and a group's name (e.g. `posthoc`, SPEC section 4) expanded to its
    members, each checked (did-you-mean error), duplicates dropped."""
    out: list[str] = []
    groups = {e.meta["group"] for e in DETECTORS.entries() if e.meta.get("group")}
    for name in names:
        if name == "all":
            out += [e.name for e in DETECTORS.entries() if not e.meta.get("ablation") and not e.meta.get("group")]
        elif name in groups:
            out += [e.name for e in DETECTORS.entries() if e.meta.get("group") == name]
        else:
            DETECTORS.entry(name)
            out.append(name)
    return list(dict.fromkeys(out))


register_detector = DETECTORS.register
register_threat = THREATS.register
register_dataset = DATASETS.register
register_arch = ARCHS.register

#: where an object without a declared `order` lists: after the declared ones
DEFAULT_ORDER = 1000.0
#: packages whose every module is imported to fill the registries (architectures, data sets, detectors, threats)
PLUGIN_PACKAGES = ("oodbench.models", "oodbench.data", "baselines", "attacks")
#: entry-point group of installed plugins (DESIGN "Bring your own model and detector")
ENTRY_POINT_GROUP = "oodbench.plugins"
_loaded = False


def import_submodules(package: str) -> list[str]:
    """Import every module of `package` (one level, pkgutil order; private `_x` modules skipped): the decorators
    in them register their objects. Returns the imported module names."""
    root = importlib.import_module(package)
    names = []
    for info in pkgutil.iter_modules(getattr(root, "__path__", []), prefix=f"{package}."):
        if not info.name.rsplit(".", 1)[-1].startswith("_"):
            importlib.import_module(info.name)
            names.append(info.name)
    return names


#: environment variable naming plugin modules (comma-separated), as `--plugin` does
PLUGINS_ENV = "OODBENCH_PLUGINS"
REGISTER_SUFFIX = {"detector": "detector", "threat model": "threat", "data set": "dataset", "architecture": "arch"}
_loading: list[str] = []  # the origin of what registers while a plugin loads


def _origin(obj: Any) -> str:
    if _loading:
        return _loading[-1]
    module = getattr(obj, "__module__", "") or ""
    return "oodbench" if module.split(".")[0] in {p.split(".")[0] for p in PLUGIN_PACKAGES} else f"module {module}"


def load_plugins(modules: Iterable[str] | None = None) -> None:
    """Fill the registries: once, the modules of `PLUGIN_PACKAGES` and the installed `oodbench.plugins` entry
    points; then the plugin modules of `$OODBENCH_PLUGINS` and of `modules` (`--plugin`), each imported once."""
    global _loaded
    if not _loaded:
        _loaded = True
        for package in PLUGIN_PACKAGES:
            import_submodules(package)
        from importlib.metadata import entry_points

        for point in entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(getattr(point, "dist", None), "name", None)
            _loading.append(f"entry point {point.name}" + (f" ({dist})" if dist else ""))
            try:
                point.load()
            except Exception as error:
                raise ConfigError(
                    f"the '{ENTRY_POINT_GROUP}' entry point '{point.name}' ({point.value}) of an installed package "
                    f"fails to load ({type(error).__name__}: {error}); fix or uninstall that package"
                ) from None
            finally:
                _loading.pop()
    names = [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]
    for name in [*names, *(modules or [])]:
        load_plugin_module(name)


def load_plugin_module(name: str) -> None:
    """Import the plugin module `name` (a module path, importable from the current folder) once."""
    if name in sys.modules:
        return
    if str(Path.cwd()) not in sys.path and "" not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    _loading.append(f"plugin {name}")
    try:
        importlib.import_module(name)
    except ImportError as error:
        raise ConfigError(
            f"plugin '{name}' cannot be imported ({error}); give a module path importable from the current folder "
            "(e.g. --plugin mypackage.detectors) or install your package"
        ) from None
    finally:
        _loading.pop()
