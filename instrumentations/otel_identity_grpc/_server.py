"""Server side: every RPC is a ``grpc.server`` hop, attached for the whole handler.

The four call shapes differ only in which attribute of the method handler holds the behavior
and in whether the response is a stream; one helper wraps any of them, for the sync and the
asyncio server alike. The hop context is built when the behavior is called (not when the
handler is looked up), so an OpenTelemetry server span started by an interceptor outside ours
is current by then and ``extract`` keeps it as the hop's span.

The wrapped handler reads the metadata from the servicer context of each call, so it depends
only on the handler and the method: it is built once per pair and reused, which keeps the
per-RPC cost to the hop itself.

With OpenTelemetry's server interceptor outside ours, the hop is decided in its pass (see
``otel_identity.instrumentation.announce``): our interceptor announces the hop when grpc looks
the handler up, in the RPC's own ``contextvars.Context`` (sync) or task (asyncio), where the
handler runs later, and OpenTelemetry's extract, whose baggage step is ours, decides it
there. The handler then finds its hop's context current and runs as it is: no second
metadata read, decode or attach. Wherever that did not happen, it does the whole hop itself.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
import grpc.aio
from opentelemetry.context import Context

import otel_identity as oi
from otel_identity import instrumentation as oii
from otel_identity import names
from otel_identity.instrumentation import (
    Announcer,
    Arriving,
    announced,
    attach,
    current_context,
    decided_context,
    detach,
    is_suppressed,
    remember,
    withdraw,
)
from otel_identity_grpc import _metadata, _state

HOP = names.HOP_GRPC_SERVER
_BAGGAGE = "baggage"
_CACHE_LIMIT = 1024
# (method as grpc gives it, id of the handler grpc found for it) -> (that handler, the handler
# wrapped, the announcer of its hop). Keyed by handler too: several servers of one process (or
# generic handlers) may each hold their own handler for a method, and must not re-wrap on
# every call.
_wrapped_handlers: dict[tuple[object, int], tuple[Any, Any, Announcer]] = {}
# method as grpc gives it -> the announcer of its hop (the route is the method).
_announcers: dict[object, Announcer] = {}

_SHAPES: dict[tuple[bool, bool], tuple[str, Callable[..., Any]]] = {
    (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
    (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
    (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
    (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
}


def hop_context(servicer_context: Any, route: str | None) -> Context:
    """The receiving hop's context for one RPC, read from its metadata (never raises:
    ``extract`` fails closed). An announcement of the hop that no extract decided here is
    closed, and a hop an extract counted already (one whose result was not attached) is not
    counted again."""
    marker = announced(HOP)
    account = True
    if marker is not None:
        marker.close()
        account = not marker.counted
    read = getattr(servicer_context, "invocation_metadata", None)
    metadata = read() if read is not None else None
    return oi.extract(metadata or (), _metadata.getter, hop=HOP, route=route, account=account)


def _route_of(details: grpc.HandlerCallDetails) -> str | None:
    method = getattr(details, "method", None)
    if isinstance(method, bytes):
        return method.decode("utf-8", "replace")
    return method if isinstance(method, str) else None


def wrap_handler(handler: Any, details: grpc.HandlerCallDetails) -> Any:
    """``handler`` with its behavior run inside the RPC's hop; None stays None."""
    return _wrapped(handler, details)[0]


def _wrapped(handler: Any, details: grpc.HandlerCallDetails) -> tuple[Any, Announcer | None]:
    """``wrap_handler``, and the announcer of the RPC's hop (None for no handler); built once
    per handler and method."""
    if handler is None:
        return None, None
    key = (getattr(details, "method", None), id(handler))
    cached = _wrapped_handlers.get(key)
    if cached is not None and cached[0] is handler:  # (the entry keeps its handler alive)
        return cached[1], cached[2]
    announcer = _announcer(details)
    wrapped = _wrap(handler, announcer.route)
    remember(_wrapped_handlers, key, (handler, wrapped, announcer), _CACHE_LIMIT)
    return wrapped, announcer


def _announcer(details: grpc.HandlerCallDetails) -> Announcer:
    """The announcer of the hop of an RPC of ``details``'s method, made once per method."""
    method = getattr(details, "method", None)
    found = _announcers.get(method)
    if found is None:  # (methods made afresh per call, say, clear the table when it is full)
        found = remember(_announcers, method, Announcer(HOP, _route_of(details)), _CACHE_LIMIT)
    return found


def hop_handler(handler: Any, details: grpc.HandlerCallDetails) -> Any:
    """``wrap_handler``, with the RPC's hop announced for an OpenTelemetry interceptor outside
    ours: grpc looks the handler up in the RPC's own ``contextvars.Context`` (sync) or task
    (asyncio), where it runs the handler later, and that interceptor extracts there.

    The hop's baggage is read from the call's metadata by our getter: OpenTelemetry's
    interceptor reads the metadata into a dict, which keeps only the last of a repeated key
    (several baggage entries whose identity conflicts must be rejected, not decided on the
    last)."""
    wrapped, announcer = _wrapped(handler, details)
    if announcer is not None and wrapped is not handler:
        _announce(announcer, getattr(details, "invocation_metadata", None) or ())
    return wrapped


def _announce(announcer: Announcer, metadata: Any) -> Arriving | None:
    """Announce one RPC's hop, its baggage header read from ``metadata`` by our getter."""
    return announcer((_metadata.header(metadata, _BAGGAGE), None))


def announce_for_opentelemetry(details: grpc.HandlerCallDetails) -> Arriving | None:
    """The RPC's hop announced for the extract of an OpenTelemetry interceptor that wraps the
    handler (see ``OpenTelemetryAndIdentity``), or None where that extract will not decide
    it: it reads only a request that has metadata, through a textmap whose baggage step is
    ours. (``details`` are grpc's own: the stage is first in the list.)"""
    metadata = details.invocation_metadata
    if not metadata:
        return None
    return _announce(_announcer(details), metadata)


def not_wrapped(handler: Any, marker: Arriving, details: grpc.HandlerCallDetails) -> Any:
    """``handler``, which OpenTelemetry's interceptor returned as it was given (it stepped
    aside for this method: uninstrumented, or filtered out): nothing extracts the request, so
    ``marker``'s announcement is withdrawn and ours does the whole hop."""
    withdraw(marker)
    return wrap_handler(handler, details)


def _wrap(handler: Any, route: str | None) -> Any:
    try:
        shape = (bool(handler.request_streaming), bool(handler.response_streaming))
        attribute, factory = _SHAPES[shape]
        behavior = getattr(handler, attribute)
        if behavior is None:
            return handler
        wrapped = _in_hop(behavior, route, response_streaming=shape[1])
        return factory(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    except Exception:  # noqa: BLE001 - serve the RPC without identity rather than fail it
        oii.log_internal_error("grpc server handler")
        return handler


def _in_hop(
    behavior: Callable[..., Any], route: str | None, *, response_streaming: bool
) -> Callable[..., Any]:
    # The wrapper must be the same kind of callable as the behavior: grpc.aio decides how to
    # run a handler (await it, iterate it, or send it to the thread pool) by inspecting it.
    if inspect.isasyncgenfunction(behavior):
        return _async_stream_in_hop(behavior, route)
    if inspect.iscoroutinefunction(behavior):
        return _async_in_hop(behavior, route)
    return _sync_in_hop(behavior, route, response_streaming=response_streaming)


def _async_stream_in_hop(behavior: Callable[..., Any], route: str | None) -> Callable[..., Any]:
    async def run_stream(request: Any, servicer_context: Any) -> AsyncIterator[Any]:
        ctx = decided_context(HOP)
        if ctx is None:
            ctx = hop_context(servicer_context, route)
        responses = behavior(request, servicer_context)
        # Each step runs under the hop; between steps the caller's context is back, so
        # nothing leaks into grpc's own loop.
        try:
            while True:
                token = attach(ctx)  # detached below, in this step
                try:
                    item = await responses.__anext__()
                except StopAsyncIteration:
                    return
                finally:
                    detach(token)
                yield item
        finally:
            token = attach(ctx)
            try:
                await responses.aclose()
            finally:
                detach(token)

    return run_stream


def _async_in_hop(behavior: Callable[..., Any], route: str | None) -> Callable[..., Any]:
    async def run_async(request: Any, servicer_context: Any) -> Any:
        if decided_context(HOP) is not None:  # decided, and attached, in OpenTelemetry's pass
            return await behavior(request, servicer_context)
        token = attach(hop_context(servicer_context, route))  # detached below, in this task
        try:
            return await behavior(request, servicer_context)
        finally:
            detach(token)

    return run_async


def _sync_in_hop(
    behavior: Callable[..., Any], route: str | None, *, response_streaming: bool
) -> Callable[..., Any]:
    def run(request: Any, servicer_context: Any) -> Any:
        ctx = decided_context(HOP)
        if ctx is not None:  # decided, and attached, in OpenTelemetry's pass
            return _responses(behavior(request, servicer_context), ctx, response_streaming)
        ctx = hop_context(servicer_context, route)
        token = attach(ctx)  # detached below, in this frame
        try:
            return _responses(behavior(request, servicer_context), ctx, response_streaming)
        finally:
            detach(token)

    return run


def _responses(result: Any, ctx: Context, streaming: bool) -> Any:
    """A response stream whose every step runs under ``ctx`` (a generator's body runs on each
    next(), after the behavior returned); any other result as it is."""
    if streaming and result is not None:
        return _IterateInContext(ctx, iter(result))
    return result


class _IterateInContext:
    """A response iterator whose every ``next()`` runs under the hop's context.

    grpc's sync server pulls responses from a pool thread after the behavior returned; the
    context is attached per step (not across yields) so nothing leaks into that thread.
    """

    __slots__ = ("_ctx", "_iterator")

    def __init__(self, ctx: Context, iterator: Iterator[Any]) -> None:
        self._ctx = ctx
        self._iterator = iterator

    def __iter__(self) -> _IterateInContext:
        return self

    def __next__(self) -> Any:
        token = attach(self._ctx)
        try:
            return next(self._iterator)
        finally:
            detach(token)

    def close(self) -> None:
        close = getattr(self._iterator, "close", None)
        if close is not None:
            token = attach(self._ctx)
            try:
                close()
            finally:
                detach(token)


class ServerInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Sync server interceptor: identity attached for the whole handler of every RPC."""

    def __init__(self, *, managed: bool = False) -> None:
        # Interceptors the instrumentor installed go quiet after uninstrument(); ones the
        # application added by hand stay on.
        self._managed = managed

    def enabled(self) -> bool:
        return (_state.active or not self._managed) and not is_suppressed(current_context())

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        handler = continuation(handler_call_details)
        if not self.enabled():
            return handler
        return hop_handler(handler, handler_call_details)


class AioServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """asyncio server interceptor: identity attached for the whole handler of every RPC."""

    def __init__(self, *, managed: bool = False) -> None:
        self._managed = managed

    enabled = ServerInterceptor.enabled

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any
    ) -> Any:
        handler = await continuation(handler_call_details)
        if not self.enabled():
            return handler
        return hop_handler(handler, handler_call_details)


class OpenTelemetryAndIdentity(grpc.ServerInterceptor):  # type: ignore[misc]
    """OpenTelemetry's server interceptor and ours as one stage of grpc's pipeline, *first*
    in the server's list: the same as the two in a row, with less work per RPC.

    Nothing runs before OpenTelemetry's extract then, so where its interceptor wraps the
    handler and the request has metadata (it extracts only then), that extract is certain to
    decide the announced hop: its handler is returned as it is, with no wrapper of ours to
    check at call time. The hop is announced once the interceptors further in have looked
    the handler up, as by ours as a stage of its own. Where it cannot be announced, ours
    wraps the handler inside OpenTelemetry's interceptor, as that stage does; where
    OpenTelemetry's interceptor steps aside for the method, ours does the whole hop. (Further
    down the list, an interceptor before it could extract the request first and take the
    hop: there the two stay two stages.)
    """

    def __init__(self, opentelemetry: Any, *, managed: bool = False) -> None:
        self.opentelemetry = opentelemetry
        self.ours = ServerInterceptor(managed=managed)

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        if not self.ours.enabled():
            return self.opentelemetry.intercept_service(continuation, details)
        marker = found = None

        def look_up(details: Any) -> Any:
            nonlocal marker, found
            found = continuation(details)  # the interceptors further in first, as ever
            marker = announce_for_opentelemetry(details)
            return found if marker is not None else wrap_handler(found, details)

        handler = self.opentelemetry.intercept_service(look_up, details)
        if marker is None or handler is not found:  # its extract decides the announced hop
            return handler
        return not_wrapped(handler, marker, details)


class AioOpenTelemetryAndIdentity(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """``OpenTelemetryAndIdentity`` for grpc.aio (which runs each RPC, from the handler's
    look-up on, in a task of its own)."""

    def __init__(self, opentelemetry: Any, *, managed: bool = False) -> None:
        self.opentelemetry = opentelemetry
        self.ours = AioServerInterceptor(managed=managed)

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        if not self.ours.enabled():
            return await self.opentelemetry.intercept_service(continuation, details)
        marker = found = None

        async def look_up(details: Any) -> Any:
            nonlocal marker, found
            found = await continuation(details)  # the interceptors further in first, as ever
            marker = announce_for_opentelemetry(details)
            return found if marker is not None else wrap_handler(found, details)

        handler = await self.opentelemetry.intercept_service(look_up, details)
        if marker is None or handler is not found:  # its extract decides the announced hop
            return handler
        return not_wrapped(handler, marker, details)
