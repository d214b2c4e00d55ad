"""Runtime plumbing: the current context, attaching and detaching one, suppression.

    from otel_identity._runtime import attach, detach, current_context

    token = attach(ctx)            # OpenTelemetry's attach, detached in the same thread or task
    try:
        assert current_context() is ctx
    finally:
        detach(token)

Every hop attaches and detaches one context; these are OpenTelemetry's own verbs, taken from
``_internals`` where it can set the ContextVar directly (same semantics, fewer calls).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from opentelemetry import context as otel_context
from opentelemetry.context import Context

from otel_identity._identity import Identity
from otel_identity._internals import attach, current_context, detach, is_suppressed
from otel_identity._state import identity_of

__all__ = ["attach", "attached", "current_context", "detach", "is_suppressed"]


@contextlib.contextmanager
def attached(ctx: Context) -> Iterator[Identity | None]:
    """Attach a hop's context for the block (yielding its identity) and detach after.

    The last step of every receiving hop; transports whose messages carry their own
    extraction (``delivery_context``) use it directly."""
    token = otel_context.attach(ctx)
    try:
        yield identity_of(ctx)
    finally:
        otel_context.detach(token)
