"""The package's shape: no import cycles, and the layers of the tree kept (which subpackage may
import which)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "langgraph_tiered_saver"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts))]


def import_graph() -> dict[str, set[str]]:
    """module -> package modules it imports (at run time or for type checking alike)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == PACKAGE.name:
                target = node.module
            else:
                continue
            submodules = {f"{target}.{a.name}" for a in node.names} & modules.keys()
            found = submodules if len(submodules) == len(node.names) else submodules | {target}
            # importing `a.b.c` runs `a.b` (its __init__) first, unless the importer is inside it
            found |= {p for m in found for p in _ancestors(m)}
            graph[name] |= {m for m in found if m in modules and m != name and not name.startswith(m + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "langgraph_tiered_saver._core.ops" in graph["langgraph_tiered_saver.saver"]  # the walk sees imports
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]



# Which subpackage may not import which: the tiers stay apart (the hot tier never reaches into
# Postgres, the durable tier never into the flush machinery), the shared layers below them
# import no tier, and nothing but `__main__` imports the command line.
FORBIDDEN: dict[str, set[str]] = {
    "_sansio": {"records", "hot", "durable", "blobs", "flushing", "locking", "_core", "cli", "importer"},
    "records": {"hot", "durable", "flushing", "locking", "_core", "cli", "importer"},
    "observability": {"hot", "durable", "blobs", "flushing", "locking", "_core", "cli", "importer"},
    "hot": {"durable", "flushing", "locking", "_core", "cli", "importer"},
    "durable": {"flushing", "locking", "_core", "cli", "importer"},
    "blobs": {"flushing", "locking", "_core", "cli", "importer"},
    "locking": {"durable", "flushing", "_core", "cli", "importer"},
    "flushing": {"cli", "importer"},
    "_core": {"cli", "importer"},
    "importer": {"cli"},
}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) else "(top)"


def layer_violations(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted(
        (module, target)
        for module, targets in graph.items()
        for target in targets
        if _layer(target) in FORBIDDEN.get(_layer(module), set())
        or (_layer(target) == "cli" and _layer(module) != "cli" and module != f"{PACKAGE.name}.__main__")
    )


def test_the_layers_are_kept() -> None:
    assert layer_violations(import_graph()) == []


def test_the_layer_check_finds_a_violation() -> None:
    graph = {
        f"{PACKAGE.name}.hot.ops": {f"{PACKAGE.name}.durable.sql"},
        f"{PACKAGE.name}.saver": {f"{PACKAGE.name}.cli.main"},
        f"{PACKAGE.name}.durable.ops": {f"{PACKAGE.name}.hot.keys"},  # allowed
    }
    assert layer_violations(graph) == [
        (f"{PACKAGE.name}.hot.ops", f"{PACKAGE.name}.durable.sql"),
        (f"{PACKAGE.name}.saver", f"{PACKAGE.name}.cli.main"),
    ]
