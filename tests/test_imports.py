"""No import cycles inside dedup, also not hidden inside functions.

Every module of the package is parsed (not imported) and every ``import`` / ``from ... import`` of a dedup
module is collected, wherever it is: module level, inside functions, methods, ``try`` blocks. Imports
under ``if TYPE_CHECKING:`` are left out (they never run). Relative imports are resolved. Importing
``a.b.c`` also runs the ``__init__`` of ``a`` and ``a.b`` first, so it counts as importing them too,
except for the packages that contain the importing module itself (they are initialised before it runs);
an explicit import of such a package (``from dedup.features import X`` inside ``dedup.features.names``)
does count.
"""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import dedup

ROOT = dedup.__name__


def _modules() -> dict[str, Path]:
    """Every module of dedup: dotted name -> source file."""
    found = {ROOT: Path(dedup.__file__)}
    for info in pkgutil.walk_packages(dedup.__path__, prefix=f"{ROOT}."):
        spec = importlib.util.find_spec(info.name)
        assert spec is not None and spec.origin is not None, info.name
        found[info.name] = Path(spec.origin)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` (their ``else`` does run)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _package_of(module: str, path: Path) -> str:
    """The package relative imports in ``module`` are resolved against."""
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _imported(module: str, path: Path, known: Iterable[str]) -> set[str]:
    """The dedup modules ``module`` imports explicitly, anywhere in its code at run time."""
    known = set(known)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package_of(module, path).split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
            out.update(f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in known)
        elif (  # importlib.import_module("dedup.x") with a literal name
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            out.add(node.args[0].value)
    return {m for m in out if m == ROOT or m.startswith(f"{ROOT}.")}


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph() -> dict[str, set[str]]:
    """dedup module -> the dedup modules importing it runs (explicit imports plus their parent packages)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        own = set(_parents(module)) | ({module} if path.name == "__init__.py" else set())
        edges: set[str] = set()
        for target in _imported(module, path, modules):
            edges.add(target)
            edges.update(p for p in _parents(target) if p not in own)
        edges.discard(module)
        graph[module] = {t for t in edges if t in modules}
    return graph


def find_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module, e.g. ``[a, b, a]``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            connect(v)

    cycles = []
    for component in components:
        start = min(component)
        # breadth-first search for the shortest way back to start, inside the component
        previous: dict[str, str] = {}
        frontier = [start]
        while frontier and start not in previous:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & component):
                    if w not in previous:
                        previous[w] = v
                        nxt.append(w)
            frontier = nxt
        path = [start]
        while True:
            path.append(previous[path[-1]])
            if path[-1] == start:
                break
        cycles.append(path[::-1])
    return sorted(cycles)


def _spell(cycles: list[list[str]]) -> str:
    return "; ".join(" -> ".join(c) for c in cycles)


# ------------------------------------------------------------------------------------- the checker itself


def test_find_cycles_spells_out_a_cycle_and_ignores_a_dag() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_imports_are_collected_everywhere_but_under_type_checking(tmp_path: Path) -> None:
    source = tmp_path / "__init__.py"
    source.write_text(
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "import dedup.errors\n"
        "from . import config\n"
        "from .x import y\n"
        "if TYPE_CHECKING:\n"
        "    from dedup.pipeline import ScanResult\n"
        "else:\n"
        "    from dedup import cache\n"
        "def f():\n"
        "    from dedup.features.names import split_names\n"
        "class C:\n"
        "    def m(self):\n"
        "        import importlib\n"
        "        importlib.import_module('dedup.tune')\n"
    )
    known = {"dedup.pkg.config", "dedup.cache"}
    assert _imported("dedup.pkg", source, known) == {
        "dedup.errors",
        "dedup.pkg",
        "dedup.pkg.config",
        "dedup.pkg.x",
        "dedup",
        "dedup.cache",
        "dedup.features.names",
        "dedup.tune",
    }


def test_graph_counts_parent_packages_but_not_the_importers_own() -> None:
    graph = import_graph()
    assert "dedup.features" in graph["dedup.config"]  # config -> features.names runs features/__init__
    assert "dedup.features.names" in graph["dedup.config"]
    assert "dedup.features" not in graph["dedup.features.keras"]  # its own package is already running


# ------------------------------------------------------------------------------------------ the package


def test_no_import_cycles_in_dedup() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, f"import cycles: {_spell(cycles)}"


def test_no_import_cycles_among_features_and_config() -> None:
    graph = import_graph()
    mine = {m for m in graph if m in ("dedup.config", "dedup.features") or m.startswith("dedup.features.")}
    assert "dedup.features.names" in mine
    cycles = find_cycles({m: graph[m] & mine for m in mine})
    assert not cycles, f"import cycles: {_spell(cycles)}"
