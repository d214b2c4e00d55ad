"""``NatsIdentityInstrumentor`` and the helpers for messages it does not see."""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
from typing import Any, TypeVar, cast

import wrapt
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, unwrap

import otel_identity as oi
from otel_identity import instrumentation as oii
from otel_identity import names
from otel_identity.instrumentation import (
    attached,
    delivery_context,
    hold,
    release,
    text_headers_setter,
)
from otel_identity_nats.package import _instruments

F = TypeVar("F", bound=Callable[..., Any])
_WRAPPED_MARK = "_otel_identity_wrapped"
# Protocol replies (JetStream acks, flow control) are not a hop of the application's work.
_CONTROL_PREFIXES = ("$JS.ACK.", "$JS.FC.", "$JS.API.CONSUMER.MSG.NEXT.")


def message_context(msg: Any, route: str | None = None) -> Any:
    """The context to handle ``msg`` in: its identity after inbound policy, or none."""

    def read(delivered: Any) -> tuple[Any, Any]:
        return getattr(delivered, "headers", None), (
            route if route is not None else getattr(delivered, "subject", None)
        )

    return delivery_context(msg, read, where="nats message_context")


def continue_message(
    msg: Any, *, route: str | None = None
) -> AbstractContextManager[oi.Identity | None]:
    """Run the block under the identity ``msg`` was published with (or none at all)."""
    return attached(message_context(msg, route))


def message_handler(fn: F) -> F:
    """Decorate ``async fn(msg)`` (or a method ``fn(self, msg)``) to run under msg's identity."""

    @functools.wraps(fn)
    async def run(*args: Any, **kwargs: Any) -> Any:
        msg = next((a for a in args[:2] if hasattr(a, "headers")), None)
        with continue_message(msg):
            return await fn(*args, **kwargs)

    return cast("F", run)


def _publish(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    if is_instrumentation_enabled():
        try:
            subject = args[0] if args else kwargs.get("subject", "")
            if not (isinstance(subject, str) and subject.startswith(_CONTROL_PREFIXES)):
                given = args[3] if len(args) > 3 else kwargs.get("headers")
                headers = dict(given or {})  # the caller's dict may be shared: never mutate it
                oi.inject(headers, text_headers_setter, hop=names.HOP_QUEUE_PUBLISH)
                if len(args) > 3:
                    args = (*args[:3], headers, *args[4:])
                else:
                    kwargs = {**kwargs, "headers": headers}
        except Exception:  # noqa: BLE001 - publish the message as given rather than fail
            oii.log_internal_error("nats publish")
    return wrapped(*args, **kwargs)


def _callback(cb: Any, subject: object) -> Any:
    route = subject if isinstance(subject, str) else None

    @functools.wraps(cb)
    async def on_message(msg: Any) -> Any:
        if not is_instrumentation_enabled():
            return await cb(msg)
        with continue_message(msg, route=route):
            return await cb(msg)

    setattr(on_message, _WRAPPED_MARK, True)
    return on_message


def _subscribe(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    # Registration always wraps; each message's wrapper checks is_instrumentation_enabled().
    cb = args[2] if len(args) > 2 else kwargs.get("cb")
    if callable(cb) and not getattr(cb, _WRAPPED_MARK, False):
        subject = args[0] if args else kwargs.get("subject")
        if len(args) > 2:
            args = (*args[:2], _callback(cb, subject), *args[3:])
        else:
            kwargs = {**kwargs, "cb": _callback(cb, subject)}
    return wrapped(*args, **kwargs)


async def _next_msg(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    # The message's context stays current in the caller's task until its next next_msg().
    release(instance)
    msg = await wrapped(*args, **kwargs)
    if is_instrumentation_enabled():
        hold(instance, message_context(msg, getattr(instance, "subject", None)))
    return msg


async def _unsubscribe(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    release(instance)  # not gated: what an enabled next_msg attached must come off
    return await wrapped(*args, **kwargs)


_TARGETS = (
    ("nats.aio.client", "Client.publish", _publish),
    ("nats.aio.client", "Client.subscribe", _subscribe),
    ("nats.aio.subscription", "Subscription.next_msg", _next_msg),
    ("nats.aio.subscription", "Subscription.unsubscribe", _unsubscribe),
)


class NatsIdentityInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Identity in the headers of every published message, current in every handler."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        for module, name, wrapper in _TARGETS:
            wrapt.wrap_function_wrapper(module, name, wrapper)

    def _uninstrument(self, **kwargs: Any) -> None:
        for module, name, _ in reversed(_TARGETS):
            owner, _, attr = name.rpartition(".")
            unwrap(f"{module}.{owner}", attr)
