"""``AmqpIdentityInstrumentor``: pika and aio-pika publish and consume.

Consumer callbacks are wrapped where they are registered (``basic_consume``,
``Queue.consume``), so each delivery runs in a scope of its own. OpenTelemetry's pika
instrumentation decorates the stored callback after registration, i.e. around ours: its
consumer span is current when ours extracts, so the hop's events land on it.
"""

from __future__ import annotations

import copy
import functools
import importlib.metadata
import importlib.util
from collections.abc import Collection
from typing import Any

import wrapt
from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, unwrap

import otel_identity as oi
from otel_identity import instrumentation as oii
from otel_identity import names
from otel_identity.instrumentation import hold, release, text_headers_setter
from otel_identity_amqp._helpers import continue_message, delivery_context
from otel_identity_amqp.package import _instruments

_WRAPPED_MARK = "_otel_identity_wrapped"


def _argument(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs.get(name)


def _replace(
    args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str, value: Any
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if len(args) > index:
        return (*args[:index], value, *args[index + 1 :]), kwargs
    return args, {**kwargs, name: value}


# -- pika ---------------------------------------------------------------------------------------


def _pika_publish(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    if is_instrumentation_enabled():
        try:
            import pika

            properties = _argument(args, kwargs, 3, "properties")
            # A copy: applications reuse one BasicProperties for many messages and threads.
            properties = pika.BasicProperties() if properties is None else copy.copy(properties)
            headers = dict(properties.headers or {})
            oi.inject(headers, text_headers_setter, hop=names.HOP_QUEUE_PUBLISH)
            properties.headers = headers
            args, kwargs = _replace(args, kwargs, 3, "properties", properties)
        except Exception:  # noqa: BLE001 - publish the message as given rather than fail
            oii.log_internal_error("pika basic_publish")
    return wrapped(*args, **kwargs)


def _pika_callback(callback: Any, queue: object) -> Any:
    @functools.wraps(callback)
    def on_message(channel: Any, method: Any, properties: Any, body: Any) -> Any:
        if not is_instrumentation_enabled():
            return callback(channel, method, properties, body)
        with continue_message(properties, route=queue if isinstance(queue, str) else None):
            return callback(channel, method, properties, body)

    setattr(on_message, _WRAPPED_MARK, True)
    return on_message


def _pika_consume(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    # Registration always wraps; whether a delivery is scoped is decided per delivery, where
    # is_instrumentation_enabled() is checked (a consumer outlives any suppression window).
    callback = _argument(args, kwargs, 1, "on_message_callback")
    if callable(callback) and not getattr(callback, _WRAPPED_MARK, False):
        from pika.adapters.blocking_connection import BlockingChannel

        # BlockingChannel registers its own dispatcher with the underlying Channel; the user's
        # callback, already wrapped one level up, is what must run under the identity.
        if not isinstance(getattr(callback, "__self__", None), BlockingChannel):
            queue = _argument(args, kwargs, 0, "queue")
            args, kwargs = _replace(
                args, kwargs, 1, "on_message_callback", _pika_callback(callback, queue)
            )
    return wrapped(*args, **kwargs)


def _pika_consume_generator(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    if not is_instrumentation_enabled():
        return wrapped(*args, **kwargs)
    queue = _argument(args, kwargs, 0, "queue")
    return _scoped_deliveries(wrapped(*args, **kwargs), queue if isinstance(queue, str) else None)


def _scoped_deliveries(deliveries: Any, queue: str | None) -> Any:
    """``BlockingChannel.consume()``: each delivery's context is current in the loop body
    until the next one is asked for (or the loop ends and the generator is closed)."""
    holder = _Holder()
    try:
        for delivery in deliveries:
            release(holder)
            properties = delivery[1] if isinstance(delivery, tuple) and len(delivery) == 3 else None
            if properties is not None:  # (None, None, None) is an inactivity timeout
                hold(holder, delivery_context(properties, queue))
            yield delivery
    finally:
        release(holder)


class _Holder:
    """Where a generator keeps its attached delivery context between two items."""


# -- aio-pika -----------------------------------------------------------------------------------


def _aio_publish(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    if is_instrumentation_enabled():
        try:
            message = _argument(args, kwargs, 0, "message")
            headers = getattr(message, "headers", None)
            if headers is None:
                headers = {}
                message.headers = headers
            oi.inject(headers, text_headers_setter, hop=names.HOP_QUEUE_PUBLISH)
        except Exception:  # noqa: BLE001
            oii.log_internal_error("aio-pika publish")
    return wrapped(*args, **kwargs)


def _aio_callback(callback: Any, queue: object) -> Any:
    route = queue if isinstance(queue, str) else None

    @functools.wraps(callback)
    async def on_message(message: Any) -> Any:
        if not is_instrumentation_enabled():
            return await callback(message)
        with continue_message(message, route=route):
            return await callback(message)

    setattr(on_message, _WRAPPED_MARK, True)
    return on_message


def _aio_consume(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    # As for pika: the per-message wrapper checks is_instrumentation_enabled().
    callback = _argument(args, kwargs, 0, "callback")
    if callable(callback) and not getattr(callback, _WRAPPED_MARK, False):
        from aio_pika.queue import QueueIterator

        # A queue iterator's own callback only buffers; its __anext__ is wrapped instead.
        if not isinstance(getattr(callback, "__self__", None), QueueIterator):
            queue = getattr(instance, "name", None)
            args, kwargs = _replace(args, kwargs, 0, "callback", _aio_callback(callback, queue))
    return wrapped(*args, **kwargs)


async def _aio_anext(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    # The delivery's context stays current in the `async for` body until the next message.
    release(instance)
    message = await wrapped(*args, **kwargs)
    if is_instrumentation_enabled():
        queue = getattr(getattr(instance, "_amqp_queue", None), "name", None)
        hold(instance, delivery_context(message, queue if isinstance(queue, str) else None))
    return message


async def _aio_close(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    release(instance)  # not gated: what an enabled __anext__ attached must come off
    return await wrapped(*args, **kwargs)


_TARGETS = {
    "pika": (
        ("pika.channel", "Channel.basic_publish", _pika_publish),
        ("pika.channel", "Channel.basic_consume", _pika_consume),
        ("pika.adapters.blocking_connection", "BlockingChannel.basic_consume", _pika_consume),
        ("pika.adapters.blocking_connection", "BlockingChannel.consume", _pika_consume_generator),
    ),
    "aio_pika": (
        ("aio_pika.exchange", "Exchange.publish", _aio_publish),
        ("aio_pika.queue", "Queue.consume", _aio_consume),
        ("aio_pika.queue", "QueueIterator.__anext__", _aio_anext),
        ("aio_pika.queue", "QueueIterator.close", _aio_close),
    ),
}


class AmqpIdentityInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Identity in the headers of every published message, current in every consumer."""

    def instrumentation_dependencies(self) -> Collection[str]:
        present = [r for r in _instruments if get_dependency_conflicts([r]) is None]
        return present or _instruments

    def _instrument(self, **kwargs: Any) -> None:
        for library, targets in _TARGETS.items():
            if importlib.util.find_spec(library) is None:
                continue
            for module, name, wrapper in targets:
                wrapt.wrap_function_wrapper(module, name, wrapper)

    def _uninstrument(self, **kwargs: Any) -> None:
        for library, targets in _TARGETS.items():
            if importlib.util.find_spec(library) is None:
                continue
            for module, name, _ in reversed(targets):
                owner, _, attr = name.rpartition(".")
                unwrap(f"{module}.{owner}", attr)
