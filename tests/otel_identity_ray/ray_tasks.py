"""Task and actor bodies for the Ray tests: plain user code, importable by Ray's workers.

The engine-neutral bodies are the Dask tests' own (one copy of each probe)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import otel_identity as oi
from tests.otel_identity_dask.dask_tasks import (
    first_span_events,
    load_user,
    resolved_user,
    verification,
    whoami,
)

__all__ = [
    "AsyncScorer",
    "Scorer",
    "die_once",
    "first_span_events",
    "load_user",
    "resolved_user",
    "verification",
    "whoami",
]


def _tenant() -> str | None:
    identity = oi.get_identity()
    return identity.tenant_id if identity else None


class Scorer:
    """An actor serving many callers: each call must see its own caller only."""

    def __init__(self) -> None:
        self.calls = 0

    def score(self, tag: object) -> tuple[object, str | None, str | None]:
        self.calls += 1
        return whoami(tag)

    def user(self) -> object:
        return oi.get_current_user()


class AsyncScorer:
    async def score(self, tag: object) -> tuple[object, str | None]:
        await asyncio.sleep(0.001)  # calls interleave on the actor's event loop
        return (tag, _tenant())


def die_once(marker: str) -> tuple[object, str | None, str | None]:
    """Kills its worker process the first time; the retry reports its identity."""
    path = Path(marker)
    if not path.exists():
        path.write_text(str(os.getpid()))
        os._exit(1)
    return whoami(int(path.read_text()) != os.getpid())
