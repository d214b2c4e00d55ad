"""The Celery app and tasks the tests publish to; also the ``-A`` module of the prefork worker.

Every task reports what it saw (identity, current_user) so the publisher can compare it with
what it sent. The broker, backend and queue come from the environment, so a worker started as a
subprocess talks to the same place as the test that started it.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, signals
from opentelemetry import trace

import otel_identity as oi

BROKER = os.environ.get("OI_CELERY_BROKER", "redis://127.0.0.1:6379/11")
QUEUE = os.environ.get("OI_CELERY_QUEUE", "otel-identity-tests")

app = Celery("otel_identity_celery_tasks", broker=BROKER, backend=BROKER)
app.conf.update(
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    result_expires=300,
    worker_hijack_root_logger=False,
    worker_prefetch_multiplier=4,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
)


def seen() -> list[Any] | None:
    identity = oi.get_identity()
    if identity is None:
        return None
    return [identity.user_id, identity.tenant_id]


# Set by tests that run without OpenTelemetry's Celery instrumentation: the task then starts
# a span of its own, on which a hop without identity records ``identity.missing``.
SPAN_IN_TASK = False


@app.task(name="oi.whoami", bind=True)
def whoami(self: Any, tag: object = None) -> list[Any]:
    if SPAN_IN_TASK:
        tracer = trace.get_tracer("tests")
        with tracer.start_as_current_span(
            "whoami", attributes={"messaging.message.id": self.request.id}
        ):
            pass
    return [tag, seen()]


@app.task(name="oi.user")
def user() -> list[Any]:
    current = oi.get_current_user()
    return [seen(), None if current is None else [current["user_id"], current["serial"]]]


@app.task(name="oi.fail")
def fail() -> None:
    raise RuntimeError("handler failed on purpose")


@app.task(name="oi.append")
def append(acc: list[Any], tag: str) -> list[Any]:
    return [*acc, [tag, seen()]]


@app.task(name="oi.collect")
def collect(results: list[Any]) -> list[Any]:
    return [results, seen()]


@app.task(name="oi.retry_once", bind=True, max_retries=2, default_retry_delay=0)
def retry_once(self: Any) -> list[Any]:
    first = seen()
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    return [self.request.retries, first]


@app.task(name="oi.spawn")
def spawn(tag: str) -> str:
    """Publishes another task from inside a task: the child must carry this task's identity."""
    return str(whoami.delay(tag).id)


if os.environ.get("OI_CELERY_WORKER") == "1":
    # The prefork worker: instrument in every pool process (OpenTelemetry's advice, and what a
    # forked child needs if the parent was instrumented after forking).
    @signals.worker_process_init.connect(weak=False)
    def _instrument(**_: Any) -> None:
        from otel_identity_celery import CeleryIdentityInstrumentor

        CeleryIdentityInstrumentor().instrument()


@app.task(name="oi.verified")
def verified() -> list[Any]:
    identity = oi.get_identity()
    return [seen(), None if identity is None else identity.verified]
