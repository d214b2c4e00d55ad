"""Explicit helpers: the two sides of a Kafka hop for code that scopes messages itself."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar, cast

import otel_identity as oi
from otel_identity import names
from otel_identity.instrumentation import attached, bytes_headers_setter, delivery_context

F = TypeVar("F", bound=Callable[..., Any])


def message_headers(message: Any) -> Any:
    """The headers of a confluent-kafka ``Message`` or a kafka-python ``ConsumerRecord``."""
    headers = getattr(message, "headers", None)
    return headers() if callable(headers) else headers


def _topic(message: Any) -> str | None:
    topic = getattr(message, "topic", None)
    if callable(topic):
        topic = topic()
    return topic if isinstance(topic, str) else None


def _headers_and_topic(message: Any) -> tuple[Any, str | None]:
    return message_headers(message), _topic(message)


def message_context(message: Any) -> Any:
    """The context to process ``message`` in: its identity after inbound policy, or none."""
    return delivery_context(message, _headers_and_topic, where="kafka message_context")


def continue_message(message: Any) -> AbstractContextManager[oi.Identity | None]:
    """Run the block under the identity ``message`` was produced with (or none at all)."""
    return attached(message_context(message))


def _find_message(args: tuple[Any, ...]) -> Any:
    # The message is the first argument, or the second for a method (self, message).
    for arg in args[:2]:
        if hasattr(arg, "headers") and hasattr(arg, "topic"):
            return arg
    return args[0] if args else None


def message_handler(fn: F) -> F:
    """Decorate ``fn(message, ...)`` (sync or async) to run under the message's identity."""
    if asyncio.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            with continue_message(_find_message(args)):
                return await fn(*args, **kwargs)

        return cast("F", run_async)

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        with continue_message(_find_message(args)):
            return fn(*args, **kwargs)

    return cast("F", run)


def identity_headers(headers: Any = None) -> list[tuple[str, bytes]]:
    """``headers`` (pairs or a mapping) plus the current trace and identity, as Kafka pairs."""
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or ())
    oi.inject(pairs, bytes_headers_setter, hop=names.HOP_QUEUE_PUBLISH)
    return pairs
