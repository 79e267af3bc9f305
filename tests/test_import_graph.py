"""No import circles in production code (app.py, chalicelib/, runner/).

The graph is read from the source with `ast`, so it holds every import: the ones at the top of a
module and the lazy ones inside functions (a lazy import still makes its module depend on the
other; it only moves the failure from import time to the first call). Imports under
`if TYPE_CHECKING:` never run; they are kept as a separate kind of edge and checked on their own
below, so a type-only dependency of the core on an edge is caught too.

Importing `a.b.c` runs the `__init__` of `a` and `a.b` first, so every package on the way is an
edge as well.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ROOTS = ("app.py", "chalicelib", "runner")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def production_modules() -> dict[str, Path]:
    """Every production module by dotted name."""
    paths = [REPO / "app.py"]
    for root in ROOTS[1:]:
        paths += sorted((REPO / root).rglob("*.py"))
    return {module_name(path): path for path in paths}


@dataclass(frozen=True)
class Import:
    """One import statement's target module, where it is, and whether it only runs for type checkers."""

    source: str
    target: str
    line: int
    type_only: bool


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def imported_names(node: ast.Import | ast.ImportFrom, name: str, path: Path) -> list[str]:
    """The dotted names an import statement loads: `import a.b` -> a.b; `from a import b` -> a.b
    (a module or a name in a; the caller keeps what is a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = package_of(name, path).split(".")
        package = package[:len(package) - (node.level - 1)]
        base = ".".join([*package, base] if base else package)
    return [base] + [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]


def with_packages(dotted: str, modules: dict[str, Path]) -> list[str]:
    """`a.b.c` and every package above it that is a production module (their `__init__` runs first)."""
    parts = dotted.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in modules]


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    tree = ast.parse(path.read_text(), str(path))
    found: list[Import] = []

    def visit(node: ast.AST, type_only: bool) -> None:
        if isinstance(node, ast.If) and is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, type_only)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for dotted in imported_names(node, name, path):
                for target in with_packages(dotted, modules):
                    if target != name:
                        found.append(Import(name, target, node.lineno, type_only))
        for child in ast.iter_child_nodes(node):
            visit(child, type_only)

    visit(tree, False)
    return found


def import_graph(type_only: bool) -> dict[str, dict[str, Import]]:
    """module -> {module it imports: the first such import}; with `type_only`, TYPE_CHECKING
    imports included."""
    modules = production_modules()
    graph: dict[str, dict[str, Import]] = {name: {} for name in modules}
    for name, path in modules.items():
        for edge in imports_of(name, path, modules):
            if type_only or not edge.type_only:
                graph[name].setdefault(edge.target, edge)
    return graph


def circles(graph: dict[str, dict[str, Import]]) -> list[list[Import]]:
    """One circle through each strongly connected component (Tarjan), as the imports that make it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [circle_in(graph, component) for component in components]


def circle_in(graph: dict[str, dict[str, Import]], component: list[str]) -> list[Import]:
    """The shortest circle from the component's first module back to itself (breadth first)."""
    members = set(component)
    start = component[0]
    paths: dict[str, list[Import]] = {start: []}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target in sorted(graph[node]):
            if target not in members:
                continue
            if target == start:
                return paths[node] + [graph[node][target]]
            if target not in paths:
                paths[target] = paths[node] + [graph[node][target]]
                queue.append(target)
    raise AssertionError(f"no circle in component {component}")


def describe(circle: list[Import]) -> str:
    """`a (line 3) -> b (line 7, type only) -> a`: each module and the line of its import of the next."""
    steps = " -> ".join(f"{edge.source} (line {edge.line}{', type only' if edge.type_only else ''})" for edge in circle)
    return f"{steps} -> {circle[0].source}"


def test_the_graph_sees_top_level_lazy_relative_and_type_only_imports():
    modules = production_modules()
    assert {"app", "chalicelib.services", "runner.__main__", "chalicelib.compute"} <= set(modules)
    edges = {(edge.target, edge.type_only) for edge in imports_of("chalicelib.services", modules["chalicelib.services"],
                                                                   modules)}
    assert ("chalicelib.config", False) in edges  # top level, `from chalicelib import config`
    assert ("chalicelib.compute.dispatch", False) in edges  # inside dispatcher()
    assert ("chalicelib.http", True) in edges  # under TYPE_CHECKING only
    runner_edges = {edge.target for edge in imports_of("runner.__main__", modules["runner.__main__"], modules)}
    assert "runner" in runner_edges  # relative or absolute, the package's __init__ runs first


def test_a_circle_is_found_and_named():
    edge = Import
    graph = {"a": {"b": edge("a", "b", 3, False)}, "b": {"c": edge("b", "c", 7, False)},
             "c": {"a": edge("c", "a", 9, True)}, "d": {"a": edge("d", "a", 1, False)}}
    found = circles(graph)
    assert [describe(circle) for circle in found] == ["a (line 3) -> b (line 7) -> c (line 9, type only) -> a"]
    del graph["c"]["a"]
    graph["c"] = {}
    assert circles(graph) == []


@pytest.mark.parametrize("type_only", [False, True], ids=["runtime-and-lazy", "with-type-checking"])
def test_production_imports_have_no_circle(type_only):
    found = circles(import_graph(type_only))
    assert not found, "import circles (one per group of modules importing each other):\n" + "\n".join(
        describe(circle) for circle in found)


# The protocol edges: Ocean Node's routes (chalicelib/node) and the v4 route functions. The core
# (jobs, payments, assets, auth, chain) serves both and so never imports either.
EDGES = ("chalicelib.node", "chalicelib.compute.handlers", "app")
CORE = ("chalicelib.compute", "chalicelib.payments", "chalicelib.assets", "chalicelib.auth", "chalicelib.chain")


def within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == package or name.startswith(package + ".") for package in packages)


def test_the_core_never_imports_a_protocol_edge():
    graph = import_graph(type_only=True)
    crossings = [edge for name, targets in graph.items() if within(name, CORE) and not within(name, EDGES)
                 for edge in targets.values() if within(edge.target, EDGES)]
    assert not crossings, "\n".join(f"{e.source} (line {e.line}) imports the edge {e.target}" for e in crossings)
