"""Publish side and worker side of the Celery hop.

Where the hooks sit, and why:

* Publish: ``before_task_publish`` only marks the task's header dict; the identity is written
  in ``kombu.Producer.publish``, which Celery calls right after every signal receiver ran. So
  it is written last whichever order the instrumentations were installed in: OpenTelemetry's
  receiver injects the unsigned current baggage into the same dict and would otherwise
  overwrite a signed one.
* Worker: Celery's tracer calls the module globals ``send_prerun``/``send_postrun`` of
  ``celery.app.trace`` around each task. Wrapping them (rather than connecting receivers)
  makes the task's identity context the innermost one: attached after every ``task_prerun``
  receiver (so OpenTelemetry's consumer span is already current and gets the events) and
  detached before every ``task_postrun`` receiver, so the contexts nest properly and the
  worker thread is left exactly as it was found.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from typing import Any

import wrapt
from opentelemetry import context as otel_context
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, unwrap
from opentelemetry.propagators.textmap import Getter

import otel_identity as oi
from otel_identity import instrumentation as oii
from otel_identity import names
from otel_identity.instrumentation import header_text, text_headers_setter
from otel_identity_celery.package import _instruments

_UID = "otel_identity_celery"


class RequestGetter(Getter[Any]):
    """Reads propagation headers from a task request: Celery turns every message header into
    an attribute of ``task.request``."""

    def get(self, carrier: Any, key: str) -> list[str] | None:
        try:
            text = header_text(getattr(carrier, key, None))
        except Exception:  # noqa: BLE001 - a property of a custom request class may raise
            oii.log_internal_error("celery RequestGetter.get")
            return None
        return None if text is None else [text]

    def keys(self, carrier: Any) -> list[str]:
        return []


request_getter = RequestGetter()


class _Local(threading.local):
    def __init__(self) -> None:
        self.headers: object = None  # the header dict of the task message being published
        self.running: list[tuple[object, object]] = []  # (task id, context token), nested


_local = _Local()


def _mark_headers(sender: object = None, headers: object = None, **kwargs: Any) -> None:
    if isinstance(headers, dict):
        _local.headers = headers


def _dispatch(**kwargs: Any) -> None:
    """Connected to task_prerun/task_postrun: Celery skips sending a signal nobody listens to,
    and the wrappers of the senders only run when it is sent."""


def _wrap_publish(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    headers = kwargs.get("headers")
    if headers is not None and headers is _local.headers:
        _local.headers = None
        if is_instrumentation_enabled():
            oi.inject(headers, text_headers_setter, hop=names.HOP_QUEUE_PUBLISH)
    return wrapped(*args, **kwargs)


def _task_context(task: Any) -> Any:
    request = task.request
    if getattr(request, "is_eager", False):
        # An eager task runs in the caller's thread, under the caller's context: a new hop of
        # the same identity, with its own current_user.
        return oi.receive(otel_context.get_current(), hop=names.HOP_QUEUE_CONSUME)
    return oi.extract(
        request, request_getter, hop=names.HOP_QUEUE_CONSUME, route=getattr(task, "name", None)
    )


def _wrap_prerun(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    result = wrapped(*args, **kwargs)
    if not is_instrumentation_enabled():
        return result
    task = kwargs.get("task") or kwargs.get("sender")
    if task is None:
        return result
    try:
        ctx = _task_context(task)
    except Exception:  # noqa: BLE001 - fail closed: the task runs without identity
        oii.log_internal_error("celery prerun")
        ctx = oi.clear_identity()
    _local.running.append((kwargs.get("task_id"), otel_context.attach(ctx)))
    return result


def _wrap_postrun(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    # Not gated on is_instrumentation_enabled(): whatever prerun attached must come off.
    running = _local.running
    task_id = kwargs.get("task_id")
    for index in range(len(running) - 1, -1, -1):
        if running[index][0] == task_id:
            for _, token in reversed(running[index:]):
                otel_context.detach(token)  # type: ignore[arg-type]
            del running[index:]
            break
    return wrapped(*args, **kwargs)


class CeleryIdentityInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Carries identity from ``apply_async``/``delay`` to the task body, per task."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        from celery import signals

        signals.before_task_publish.connect(
            _mark_headers, weak=False, dispatch_uid=f"{_UID}.publish"
        )
        signals.task_prerun.connect(_dispatch, weak=False, dispatch_uid=f"{_UID}.prerun")
        signals.task_postrun.connect(_dispatch, weak=False, dispatch_uid=f"{_UID}.postrun")
        wrapt.wrap_function_wrapper("kombu.messaging", "Producer.publish", _wrap_publish)
        wrapt.wrap_function_wrapper("celery.app.trace", "send_prerun", _wrap_prerun)
        wrapt.wrap_function_wrapper("celery.app.trace", "send_postrun", _wrap_postrun)

    def _uninstrument(self, **kwargs: Any) -> None:
        import celery.app.trace
        import kombu.messaging
        from celery import signals

        signals.before_task_publish.disconnect(_mark_headers, dispatch_uid=f"{_UID}.publish")
        signals.task_prerun.disconnect(_dispatch, dispatch_uid=f"{_UID}.prerun")
        signals.task_postrun.disconnect(_dispatch, dispatch_uid=f"{_UID}.postrun")
        unwrap(kombu.messaging.Producer, "publish")
        unwrap(celery.app.trace, "send_prerun")
        unwrap(celery.app.trace, "send_postrun")
