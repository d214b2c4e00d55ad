"""Celery: every task runs under the identity it was published with, and only that one.

    from otel_identity_celery import CeleryIdentityInstrumentor

    CeleryIdentityInstrumentor().instrument()   # in the publisher and in every worker

    with oi.use_identity(user_id="u-1", tenant_id="acme"):
        report.delay(42)                        # the message carries the identity

    @app.task
    def report(n):
        oi.get_identity()                       # Identity(user_id='u-1', tenant_id='acme')
        oi.current_user                         # resolved afresh for this task

A task published without identity runs without one (never with the previous task's), and its
consumer span gets ``identity.missing`` (the span of OpenTelemetry's ``CeleryInstrumentor``;
without it, the first span the task starts). Groups and chord headers carry the identity of the
code that starts them; the next link of a chain, a chord's body and a retry are published from
inside the running task, under its identity. Eager tasks (``apply()``, ``task_always_eager``)
run under the caller's identity, as a hop of their own. The prefork, threads and solo pools behave
the same (the hooks are per thread and per process). Works alongside OpenTelemetry's
``CeleryInstrumentor`` in either instrumentation order: the identity is written after its
headers and made current inside its consumer span.
"""

from __future__ import annotations

from otel_identity_celery._instrumentor import CeleryIdentityInstrumentor

__all__ = ["CeleryIdentityInstrumentor"]
