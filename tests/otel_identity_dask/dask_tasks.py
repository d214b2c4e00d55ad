"""Task bodies for the Dask tests: plain user code, importable by the worker processes."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_identity as oi

_provider: TracerProvider | None = None
_exporter = InMemorySpanExporter()


def _tracer() -> Any:
    """A worker-local SDK pipeline (workers run no opentelemetry-instrument)."""
    global _provider
    if _provider is None:
        _provider = TracerProvider()
        _provider.add_span_processor(oi.IdentitySpanProcessor())
        _provider.add_span_processor(SimpleSpanProcessor(_exporter))
    return _provider.get_tracer("dask-tests")


def whoami(tag: object) -> tuple[object, str | None, str | None]:
    time.sleep(random.random() / 1000)  # interleave tasks of different tenants on one thread
    identity = oi.get_identity()
    if identity is None:
        return (tag, None, None)
    return (tag, identity.user_id, identity.tenant_id)


def tenant_of(x: int) -> tuple[int, str | None]:
    identity = oi.get_identity()
    return (x, identity.tenant_id if identity else None)


def first_span_events() -> dict[str, Any]:
    """What the first span this task starts records, and the task's hop."""
    with _tracer().start_as_current_span("work") as span:
        events = [(e.name, dict(e.attributes or {})) for e in span.events]  # type: ignore[attr-defined]
    state = oi.hop_state()
    parent = span.parent  # type: ignore[attr-defined]
    return {
        "events": events,
        "trace": (parent.trace_id, parent.span_id) if parent else None,
        "hop": state.hop if state else None,
        "outcome": state.outcome if state else None,
    }


def verification() -> dict[str, Any]:
    identity = oi.get_identity()
    state = oi.hop_state()
    return {
        "user_id": identity.user_id if identity else None,
        "verified": identity.verified if identity else None,
        "outcome": state.outcome if state else None,
        "reason": state.reason if state else None,
    }


def load_user(identity: oi.Identity) -> dict[str, Any]:
    """The resolver the tests configure only through OTEL_IDENTITY_RESOLVER."""
    return {"name": f"{identity.user_id}@{identity.tenant_id}", "pid": os.getpid()}


def resolved_user() -> Any:
    return oi.get_current_user()


def die_once(marker: str) -> tuple[object, str | None, str | None]:
    """Kills its worker process the first time it runs; the retry reports its identity."""
    path = Path(marker)
    if not path.exists():
        path.write_text(str(os.getpid()))
        os._exit(1)
    return whoami(int(path.read_text()) != os.getpid())


def add_tenant(values: list[tuple[int, str | None]]) -> list[tuple[int, str | None, str | None]]:
    """A downstream task of a delayed graph: its own identity next to its inputs'."""
    identity = oi.get_identity()
    return [(x, tenant, identity.tenant_id if identity else None) for x, tenant in values]


def nested_whoami(tag: object) -> tuple[object, str | None, str | None]:
    """A task that submits a task: the inner one runs under the outer one's identity."""
    from distributed import worker_client

    with worker_client() as client:
        return client.submit(whoami, tag, pure=False).result()  # type: ignore[no-any-return]
