"""Dask collections (``delayed`` graphs, bags, arrays) computed through a client.

    renamed = with_identity(collection, carrier, digest)   # same result, carried identity
    client.compute(renamed)

A collection's tasks are built before the client sees them, so its graph is rewritten at
``compute``/``persist`` time, in the caller's context: every node becomes a ``TaskCall`` that
runs the original node as a ``task`` hop, and every key gets the identity's digest (so two
tenants computing the same graph never share a key, while one tenant's recomputation still
does). The collection is rebuilt through the public ``__dask_postpersist__`` protocol.

This is the one module relying on a Dask internal: the task spec of ``dask._task_spec``
(``convert_legacy_graph``, ``parse_input``, ``Task``, ``TaskRef``, and calling a node with
its dependencies' values), the form every Dask graph takes since 2024.12. ``missing()``
names what an upgrade removed; the instrumentor then leaves collections alone (logged
once), and tests/otel_identity_dask checks it loudly.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from otel_identity_dask._task import TaskCall

_SPEC = "dask._task_spec"
_NAMES = ("convert_legacy_graph", "parse_input", "Task", "TaskRef", "GraphNode")


def missing() -> list[str]:
    """The task-spec names this Dask lacks (empty when all are there)."""
    try:
        spec = importlib.import_module(_SPEC)
    except ImportError:
        return [_SPEC]
    return [f"{_SPEC}.{name}" for name in _NAMES if not hasattr(spec, name)]


class NodeCall:
    """Runs one graph node with its dependencies' values (what a worker passes a task)."""

    __slots__ = ("node",)

    def __init__(self, node: Any) -> None:
        self.node = node

    @property
    def __name__(self) -> str:  # type: ignore[override]
        from dask.utils import key_split

        return str(key_split(self.node.key))

    def __reduce__(self) -> tuple[type[NodeCall], tuple[Any]]:
        return (NodeCall, (self.node,))

    def __call__(self, values: Mapping[Any, Any]) -> Any:
        return self.node(values)


def renamed(key: Any, digest: str) -> Any:
    """``key`` with the identity digest in its name ('' keeps it: no identity, no change)."""
    if not digest:
        return key
    if isinstance(key, tuple):
        return (f"{key[0]}-{digest}", *key[1:])
    return f"{key}-{digest}"


def _name(key: Any) -> Any:
    return key[0] if isinstance(key, tuple) else key


def graph_with_identity(
    dsk: Mapping[Any, Any], carrier: dict[str, str], digest: str
) -> dict[Any, Any]:
    """Every node of ``dsk`` as a task hop under ``carrier``, keys renamed by ``digest``."""
    spec = importlib.import_module(_SPEC)
    nodes = spec.convert_legacy_graph(dict(dsk))
    graph: dict[Any, Any] = {}
    for key, node in nodes.items():
        new_key = renamed(key, digest)
        # A dependency outside the graph (a persisted future's key) keeps its own name.
        refs = {
            dep: spec.TaskRef(renamed(dep, digest) if dep in nodes else dep)
            for dep in node.dependencies
        }
        call = TaskCall(NodeCall(node), carrier, digest)
        graph[new_key] = spec.Task(new_key, call, spec.parse_input(refs))
    return graph


def with_identity(collection: Any, carrier: dict[str, str], digest: str) -> Any:
    """``collection`` rebuilt over ``graph_with_identity`` of its graph."""
    graph = collection.__dask_graph__()
    new_graph = graph_with_identity(graph, carrier, digest)
    rebuild, extra = collection.__dask_postpersist__()
    rename = {_name(k): _name(renamed(k, digest)) for k in graph} if digest else None
    return rebuild(new_graph, *extra, rename=rename)
