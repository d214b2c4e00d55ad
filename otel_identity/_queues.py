"""Identity per item through in-process queues: the sender's context travels with the item.

    q = IdentityQueue(queue.Queue())         # AsyncIdentityQueue(asyncio.Queue()) for asyncio
    q.put(job)                               # captures the caller's context (identity, trace)
    with q.get() as job:                     # this block runs under the job's identity
        handle(job)

No serialisation: the context object itself is carried, and the receiving side is an
in-process hand-off (``_handoff.receive``) of hop kind ``queue.consume``.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from opentelemetry import context as otel_context
from opentelemetry.context import Context

from otel_identity import names
from otel_identity._handoff import receive

T = TypeVar("T")
R = TypeVar("R")


class Envelope(Generic[T]):
    """An item with the context it was sent under.

    ``with envelope as item:`` runs the block as a ``queue.consume`` hop under the sender's
    identity (none if it had none: a previous item's identity never carries over), with a
    fresh ``current_user``; ``envelope.run(fn, *args)`` does the same for one call.
    """

    __slots__ = ("_tokens", "context", "item")

    def __init__(self, item: T, context: Context) -> None:
        self.item = item
        self.context = context
        self._tokens: list[tuple[int, object]] = []

    def __enter__(self) -> T:
        token = otel_context.attach(receive(self.context, hop=names.HOP_QUEUE_CONSUME))
        self._tokens.append((threading.get_ident(), token))
        return self.item

    def __exit__(self, *exc_info: object) -> None:
        # Per thread: an envelope fanned out to several consumer threads stays consistent.
        me = threading.get_ident()
        tokens = self._tokens
        for index in range(len(tokens) - 1, -1, -1):
            if tokens[index][0] == me:
                otel_context.detach(tokens.pop(index)[1])  # type: ignore[arg-type]
                return

    def run(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        token = otel_context.attach(receive(self.context, hop=names.HOP_QUEUE_CONSUME))
        try:
            return fn(*args, **kwargs)
        finally:
            otel_context.detach(token)

    def __repr__(self) -> str:
        return f"Envelope({self.item!r})"


def seal(item: T, *, context: Context | None = None) -> Envelope[T]:
    """``item`` with the current context (or ``context``), ready for any in-process queue."""
    return Envelope(item, context if context is not None else otel_context.get_current())


class IdentityQueue(Generic[T]):
    """A ``queue.Queue`` (or any object with its put/get) whose items keep their identity.

    ``put``/``put_nowait`` seal the item with the caller's context; ``get``/``get_nowait``
    return the ``Envelope``: use it as ``with q.get() as item:``.
    """

    def __init__(self, inner: queue.Queue[Envelope[T]] | None = None) -> None:
        self.inner: queue.Queue[Envelope[T]] = inner if inner is not None else queue.Queue()

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        self.inner.put(seal(item), block, timeout)

    def put_nowait(self, item: T) -> None:
        self.inner.put_nowait(seal(item))

    def get(self, block: bool = True, timeout: float | None = None) -> Envelope[T]:
        return self.inner.get(block, timeout)

    def get_nowait(self) -> Envelope[T]:
        return self.inner.get_nowait()

    def task_done(self) -> None:
        self.inner.task_done()

    def join(self) -> None:
        self.inner.join()

    def qsize(self) -> int:
        return self.inner.qsize()

    def empty(self) -> bool:
        return self.inner.empty()


class AsyncIdentityQueue(Generic[T]):
    """``IdentityQueue`` for ``asyncio.Queue``: ``await q.put(x)``; ``with await q.get() as x:``."""

    def __init__(self, inner: asyncio.Queue[Envelope[T]] | None = None) -> None:
        self.inner: asyncio.Queue[Envelope[T]] = inner if inner is not None else asyncio.Queue()

    async def put(self, item: T) -> None:
        await self.inner.put(seal(item))

    def put_nowait(self, item: T) -> None:
        self.inner.put_nowait(seal(item))

    async def get(self) -> Envelope[T]:
        return await self.inner.get()

    def get_nowait(self) -> Envelope[T]:
        return self.inner.get_nowait()

    def task_done(self) -> None:
        self.inner.task_done()

    async def join(self) -> None:
        await self.inner.join()

    def qsize(self) -> int:
        return self.inner.qsize()

    def empty(self) -> bool:
        return self.inner.empty()
