"""The import structure: who may import whom, read from the source (ast), not from runtime.

The core (``otel_identity``) knows no transport; transports and the demo use the core only
through ``otel_identity`` and ``otel_identity.instrumentation``; no module imports itself back
through a chain of others (a cycle works only by import order, and breaks on the next edit).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Every package we ship: the core, the demo, each instrumentation package.
PACKAGES = {
    "otel_identity": ROOT / "otel_identity",
    "otel_identity_demo": ROOT / "otel_identity_demo",
    **{p.name: p for p in sorted((ROOT / "instrumentations").iterdir()) if p.is_dir()},
}
PACKAGES = {name: path for name, path in PACKAGES.items() if (path / "__init__.py").exists()}


def _module_name(package: str, path: Path) -> str:
    parts = [package, *path.relative_to(PACKAGES[package]).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {
    _module_name(package, file): file
    for package, root in PACKAGES.items()
    for file in sorted(root.rglob("*.py"))
}


def _at_import_time(node: ast.AST) -> Iterator[ast.AST]:
    """The statements that run when a module is imported: not function bodies (a lazy import
    runs at call time, when every module is loaded) nor ``if TYPE_CHECKING`` blocks."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            continue
        yield child
        yield from _at_import_time(child)


def _imports(module: str, *, lazy: bool) -> Iterator[str]:
    """The modules of ours that ``module`` imports: at import time, or anywhere (``lazy``)."""
    file = MODULES[module]
    package = module if file.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(file.read_text(), str(file))
    for node in ast.walk(tree) if lazy else _at_import_time(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from package import module`` is an import of that module; of a name, of
            # the module that defines it.
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        else:
            continue
        for name in names:
            ours = name
            while ours and ours not in MODULES:
                ours = ours.rpartition(".")[0]
            if ours and ours != module:
                yield ours


# What each module imports when it is imported (where a cycle bites), and anywhere.
GRAPH = {module: set(_imports(module, lazy=False)) for module in MODULES}
ALL_IMPORTS = {module: set(_imports(module, lazy=True)) for module in MODULES}


def _cycle_from(start: str, graph: dict[str, set[str]] = GRAPH) -> list[str] | None:
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for target in graph[node]:
            if target == start:
                return [*path, start]
            if target not in seen:
                seen.add(target)
                stack.append((target, [*path, target]))
    return None


def test_the_graph_sees_the_known_imports() -> None:
    """A guard on the parser itself: the edges the rules below are about are found."""
    assert "otel_identity.instrumentation" in GRAPH["otel_identity_http._server"]
    assert "otel_identity._context" in GRAPH["otel_identity"]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_itself_back(module: str) -> None:
    assert _cycle_from(module) is None, " -> ".join(_cycle_from(module) or ())


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_has_a_cycle_even_through_lazy_imports(module: str) -> None:
    """No import-order tricks at all: not even a function-level import closes a cycle (the
    HTTP package's WSGI, ASGI and tap modules used to; settings and keys, the report and its
    page too)."""
    cycle = _cycle_from(module, ALL_IMPORTS)
    assert cycle is None, " -> ".join(cycle or ())


def test_no_package_imports_itself_back() -> None:
    """Between packages (the core, the demo, each transport) no cycle either, lazy included."""
    edges = {
        (module.split(".")[0], target.split(".")[0])
        for module, targets in ALL_IMPORTS.items()
        for target in targets
        if module.split(".")[0] != target.split(".")[0]
    }
    assert not {(a, b) for a, b in edges if (b, a) in edges}


def test_the_core_imports_no_transport_nor_the_demo() -> None:
    outside = {
        (module, target)
        for module, targets in ALL_IMPORTS.items()
        if module.split(".")[0] == "otel_identity"
        for target in targets
        if target.split(".")[0] != "otel_identity"
    }
    assert outside == set()


def test_transports_and_the_demo_use_only_the_public_core() -> None:
    private = {
        (module, target)
        for module, targets in ALL_IMPORTS.items()
        if module.split(".")[0] != "otel_identity"
        for target in targets
        if target.startswith("otel_identity._")
    }
    assert private == set()
