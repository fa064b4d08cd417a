"""The import graph of ``src/slimtorch`` has no cycles and nothing below the CLI imports it.

Every ``import`` and ``from ... import`` statement counts, at module top or inside a function
(a function-level import is a dependency taken later, not no dependency). ``from pkg import
name`` is an edge to ``pkg.name`` where that is a submodule, else to ``pkg`` (its
``__init__.py``); relative imports are resolved; a package's ``__init__.py`` re-exporting a
submodule is an edge from the package to it. Only edges inside ``slimtorch`` are kept.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "src" / "slimtorch"
ROOT_CLI = "slimtorch.cli.main"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(path: Path, name: str) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def resolve_from(node: ast.ImportFrom, package: str) -> str:
    if node.level == 0:
        return node.module or ""
    base = package.split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(path: Path, name: str, modules: set[str]) -> set[str]:
    """The slimtorch modules ``path`` imports, anywhere in its body."""
    found: set[str] = set()
    nodes = list(ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))))
    if any(calls_import_module(n) for n in nodes):
        found.update(n.value for n in nodes if isinstance(n, ast.Constant) and n.value in modules)
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = resolve_from(node, package_of(path, name))
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.add(submodule if submodule in modules else source)
    return {m for m in found if m in modules and m != name}


def calls_import_module(node: ast.AST) -> bool:
    if isinstance(node, ast.Attribute):
        return node.attr == "import_module"
    return isinstance(node, ast.Name) and node.id == "import_module"


@functools.cache
def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in sorted(PACKAGE_ROOT.rglob("*.py"))}
    modules = set(paths)
    return {name: imported_modules(path, name, modules) for name, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    for start in sorted(graph):
        if state.get(start):
            continue
        path = [start]
        stack = [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per group of mutually importing modules, each as a path."""
    found: list[list[str]] = []
    seen: set[str] = set()
    while cycle := find_cycle({n: t - seen for n, t in graph.items() if n not in seen}):
        found.append(cycle)
        reach = reachable(graph, cycle[0])  # the strongly connected component of the cycle
        seen.update(n for n in reach if cycle[0] in reachable(graph, n))
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    done, todo = {start}, [start]
    while todo:
        for nxt in graph[todo.pop()] - done:
            done.add(nxt)
            todo.append(nxt)
    return done


def is_cli(name: str) -> bool:
    """The CLI layer: the ``slimtorch.cli`` package and ``__main__``."""
    return (
        name == "slimtorch.__main__" or name == "slimtorch.cli" or name.startswith("slimtorch.cli.")
    )


def test_graph_sees_function_level_and_relative_imports() -> None:
    graph = import_graph()
    assert "slimtorch.profile" in graph and ROOT_CLI in graph
    assert ROOT_CLI in graph["slimtorch.__main__"]
    assert all(name.startswith("slimtorch") for name in graph)


def test_find_cycle_reports_a_path() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    graph["e"] = {"f"}
    graph["f"] = {"e"}
    assert cycles(graph) == [["a", "b", "c", "a"], ["e", "f", "e"]]


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert found == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_nothing_below_the_cli_imports_it() -> None:
    graph = import_graph()
    wrong = sorted(
        f"{name} imports {target}"
        for name, targets in graph.items()
        for target in targets
        if is_cli(target) and not is_cli(name)
    )
    assert wrong == []


def test_no_subcommand_imports_the_root_cli() -> None:
    graph = import_graph()
    importers = sorted(n for n, targets in graph.items() if ROOT_CLI in targets)
    assert importers == ["slimtorch.__main__"]


def test_the_measuring_layer_is_not_a_base_layer() -> None:
    """core, prune and quantize build on core (tracer, weight formats), never on profile."""
    graph = import_graph()
    below = ("slimtorch.core", "slimtorch.prune", "slimtorch.quantize")
    wrong = sorted(
        f"{name} imports {target}"
        for name, targets in graph.items()
        if name.startswith(below) and not is_cli(name)
        for target in targets
        if target == "slimtorch.profile" or target.startswith("slimtorch.profile.")
    )
    assert wrong == []
