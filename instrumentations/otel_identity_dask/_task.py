"""The task side of the Dask hop: a picklable callable that carries the caller's identity.

    call = TaskCall(fn, carrier_of_current(), identity_digest())
    client.submit(call, 1, 2)     # runs fn(1, 2) on a worker, under the sender's identity

The carrier is the ``oi.inject`` output (trace context, baggage, a signature when signing is
on): plain strings, so it rides in the task spec through the scheduler and survives retries on
another worker. Dask names a pure task by a hash of its callable and arguments; ``TaskCall``
hashes as its function plus a digest of the identity's claims, so two tenants making the same
call get two tasks and two results, while one identity's repeated call still shares one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.context import Context

import otel_identity as oi
from otel_identity import names

_HOP = names.HOP_TASK


def carrier_of_current() -> dict[str, str]:
    """The current context as the task will carry it (signed when signing keys are set)."""
    carrier: dict[str, str] = {}
    oi.inject(carrier, hop=_HOP)
    return carrier


def identity_digest(identity: oi.Identity | None) -> str:
    """A short, stable digest of the claims that decide what a task may see ('' for none).

    Every claim counts (a role or a session may change what a tenant's code reads); the
    ``verified`` flag does not, since it is decided again on the worker."""
    if identity is None:
        return ""
    claims = (identity.user_id, identity.tenant_id, identity.session_id, identity.roles)
    return hashlib.sha256(repr(claims).encode()).hexdigest()[:16]


def run_in_task(fn: Callable[..., Any], carrier: dict[str, str] | None, args: Any, kw: Any) -> Any:
    """``fn(*args, **kw)`` as a ``task`` hop continuing ``carrier``; detached after.

    The base is an empty context, not the worker thread's: a task sees exactly what its sender
    sent (a pooled thread keeps nothing from the previous task). ``extract`` applies the
    inbound policy, counts the hop and leaves ``identity.missing``/``identity.rejected`` for
    the first span the task starts; it never raises."""
    if carrier is None:
        return fn(*args, **kw)
    token = otel_context.attach(oi.extract(carrier, hop=_HOP, context=Context()))
    try:
        return fn(*args, **kw)
    finally:
        otel_context.detach(token)


class TaskCall:
    """``fn`` with the sender's carrier; picklable when ``fn`` is, named and hashed like it."""

    __slots__ = ("carrier", "digest", "fn")

    def __init__(self, fn: Callable[..., Any], carrier: dict[str, str] | None, digest: str) -> None:
        self.fn = fn
        self.carrier = carrier
        self.digest = digest

    @property
    def __name__(self) -> str:  # type: ignore[override]
        # Dask prefixes task keys with the callable's name: keep the user's on the dashboard.
        from dask.utils import funcname

        return funcname(self.fn)

    def __dask_tokenize__(self) -> object:
        # The carrier is left out on purpose: its trace context and signature differ on
        # every call, and a pure task must hash the same for the same identity.
        from dask.base import tokenize

        return ("otel-identity-task", tokenize(self.fn), self.digest)

    def __reduce__(self) -> tuple[type[TaskCall], tuple[Any, ...]]:
        return (TaskCall, (self.fn, self.carrier, self.digest))

    def __repr__(self) -> str:
        return f"TaskCall({self.fn!r})"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return run_in_task(self.fn, self.carrier, args, kwargs)
