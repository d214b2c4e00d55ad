"""The receiving side of an AMQP hop, for code that scopes deliveries itself."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar, cast

import otel_identity as oi
from otel_identity import instrumentation as oii
from otel_identity.instrumentation import attached

F = TypeVar("F", bound=Callable[..., Any])


def delivery_context(message: Any, route: str | None = None) -> Any:
    """The context for one delivery: ``message`` is pika ``BasicProperties`` or an aio-pika
    message (anything with ``headers``); ``route`` the queue, for the anonymous-route rule."""

    def read(delivered: Any) -> tuple[Any, Any]:
        queue = route if route is not None else getattr(delivered, "routing_key", None)
        return getattr(delivered, "headers", None), queue

    return oii.delivery_context(message, read, where="amqp delivery_context")


def continue_message(
    message: Any, *, route: str | None = None
) -> AbstractContextManager[oi.Identity | None]:
    """Run the block under the identity the delivery was published with (or none)."""
    return attached(delivery_context(message, route))


def _carrier_of(args: tuple[Any, ...]) -> Any:
    # pika: (channel, method, properties, body); aio-pika: (message,) or (self, message)
    if len(args) == 4:
        return args[2]
    for arg in args[:2]:
        if hasattr(arg, "headers"):
            return arg
    return None


def message_handler(fn: F) -> F:
    """Decorate a pika callback ``fn(ch, method, properties, body)`` or an aio-pika one
    ``async fn(message)`` to run under the delivery's identity."""
    if asyncio.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            with continue_message(_carrier_of(args)):
                return await fn(*args, **kwargs)

        return cast("F", run_async)

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        route = getattr(args[1], "routing_key", None) if len(args) == 4 else None
        with continue_message(_carrier_of(args), route=route):
            return fn(*args, **kwargs)

    return cast("F", run)
