"""The import graph of the packages (DESIGN "Who knows what"): no import cycle, function-level imports included,
and no import from a lower layer to a higher one (the engine never imports the tools; the attacks never import
the detectors, the tools or the orchestration that drives them)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("oodbench", "baselines", "attacks")


def module_files() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its body (a module's own parent packages excluded:
    Python imports them first anyway)."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


GRAPH = import_graph(module_files())


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle():
    assert cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _imports_under(prefix: str) -> dict[str, set[str]]:
    return {m: deps for m, deps in GRAPH.items() if m == prefix or m.startswith(prefix + ".")}


def _offenders(importers: dict[str, set[str]], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{m} -> {d}"
        for m, deps in importers.items()
        for d in deps
        if any(d == f or d.startswith(f + ".") for f in forbidden)
    )


def test_the_engine_never_imports_the_tools():
    engine = {m: d for m, d in GRAPH.items() if not m.startswith("oodbench.tools") and m != "oodbench.cli"}
    assert _offenders(engine, ("oodbench.tools",)) == []


@pytest.mark.parametrize("package", ["attacks", "baselines"])
def test_plugins_never_import_what_drives_them(package):
    drivers = ("oodbench.tools", "oodbench.cli", "oodbench.runner", "oodbench.launch", "oodbench.results")
    forbidden = drivers + (("baselines",) if package == "attacks" else ())
    assert _offenders(_imports_under(package), forbidden) == []


def test_the_graph_sees_function_level_imports():
    # oodbench.runner imports the training loop inside a function (obtain_model)
    assert "oodbench.training" in GRAPH["oodbench.runner"]
