"""Process hops: ``ProcessPoolExecutor.submit``/``map`` and ``multiprocessing.Process``.

Nothing in-process survives into a child, so identity is serialized at hand-off with
``oi.inject`` into a plain dict, and the callable travels inside ``ProcessCall``, a picklable
top-level wrapper: the child needs no instrumentation of its own (spawn and forkserver start a
fresh interpreter) and restores the identity with the core's receive side, as a ``process``
hop, before it runs the target. Its ``current_user`` is resolved in the child, by the resolver
registered there (``OTEL_IDENTITY_RESOLVER`` reaches spawned children through the environment).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent import futures
from multiprocessing import process
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from otel_identity import extract, inject, names
from otel_identity_threading._workers import is_worker_loop

_HOP = names.HOP_PROCESS


class ProcessCall:
    """``fn`` with the sender's propagation headers; picklable when ``fn`` is.

    A ``None`` carrier runs ``fn`` on an empty context, without a hop (a pool's worker).
    """

    __slots__ = ("carrier", "fn")

    def __init__(self, fn: Callable[..., Any], carrier: dict[str, str] | None) -> None:
        self.fn = fn
        self.carrier = carrier

    def __reduce__(
        self,
    ) -> tuple[type[ProcessCall], tuple[Callable[..., Any], dict[str, str] | None]]:
        return (ProcessCall, (self.fn, self.carrier))

    def __repr__(self) -> str:
        return f"ProcessCall({self.fn!r})"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # An empty base: a forked child (or a reused pool worker) must see exactly what was
        # sent, not the context its process happened to be forked with.
        carrier = self.carrier
        ctx = Context() if carrier is None else extract(carrier, hop=_HOP, context=Context())
        token = otel_context.attach(ctx)
        try:
            return self.fn(*args, **kwargs)
        finally:
            otel_context.detach(token)


def carrier_of_current() -> dict[str, str]:
    carrier: dict[str, str] = {}
    inject(carrier, hop=_HOP)
    return carrier


def wrap_process_pool_submit(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if not args or not is_instrumentation_enabled():
        return wrapped(*args, **kwargs)
    return wrapped(ProcessCall(args[0], carrier_of_current()), *args[1:], **kwargs)


def wrap_process_start(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    target = getattr(instance, "_target", None)
    if target is None or isinstance(target, ProcessCall) or not is_instrumentation_enabled():
        return wrapped(*args, **kwargs)
    # The child gets the wrapped target (pickled for spawn/forkserver, copied by fork) while
    # ``start`` runs; the parent's Process object is left as it was.
    carrier = None if is_worker_loop(target) else carrier_of_current()
    instance._target = ProcessCall(target, carrier)
    try:
        return wrapped(*args, **kwargs)
    finally:
        instance._target = target


TARGETS: tuple[tuple[type, str, Any], ...] = (
    (futures.ProcessPoolExecutor, "submit", wrap_process_pool_submit),
    (process.BaseProcess, "start", wrap_process_start),
)
