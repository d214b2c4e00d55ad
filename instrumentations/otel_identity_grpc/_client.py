"""Client side: identity into the call's metadata, within the egress allow list of the target.

A client interceptor cannot see the channel it runs on, so it is bound to the channel's target
at creation (the instrumentor does that for every channel it creates). One function, ``carry``,
does the work for every call shape and every sync entry point: the sync interceptor (one class
for all four shapes, through ``send``) and the channel wrapper the instrumentor puts on sync
channels; ``asend`` does it for the asyncio interceptors (grpc.aio files each interceptor
object under the first shape it matches, so there are four tiny subclasses of one base).

Egress is decided on the metadata as it goes to the wire (``_wire``), whoever injected it, so
it holds in whichever order the interceptors run:

- sync channels of the instrumentor: the filter sits under every interceptor (``_wire``), so
  our layer only injects (signed, when signing is on); the filter strips identity for a target
  off the list and records ``identity.stripped`` on the span current there (OpenTelemetry's
  client span, when its interceptor is on the channel);
- our interceptors by hand, and asyncio channels (where ours is last, nearest the wire): our
  layer filters the metadata it passes on, and keeps the context without identity attached
  while the inner interceptors run, so what they inject has none either.
"""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import grpc
import grpc.aio
import wrapt
from opentelemetry import context as otel_context
from opentelemetry.context import Context

import otel_identity as oi
from otel_identity.instrumentation import current_context, is_suppressed, outgoing_context
from otel_identity_grpc import _metadata, _state, _wire


def _carrying(
    metadata: Any, out: Context, target: str | None, *, filtering: bool
) -> tuple[list[Any], Context]:
    """The metadata to pass on (``out`` injected, filtered for ``target`` when ``filtering``)
    and the context the inner interceptors run under."""
    carrier = _metadata.pairs(metadata)
    # Signing and limits were applied by outgoing_context; oi.inject adds the propagator's work.
    oi.inject(carrier, _metadata.setter, context=out)
    if not filtering or target is None:
        return carrier, out
    stripped, address = _wire.filter_or_drop(carrier, target)
    if stripped:
        _wire.record_stripped(address)
    if _wire.judge(target)[0]:
        return carrier, out
    return carrier, _wire.without_identity(out, target)


def send(
    target: str | None, metadata: Any, invoke: Callable[[Any], Any], *, streaming: bool
) -> Any:
    """Start a sync call through ``invoke(metadata)`` with the caller's identity in it."""
    ctx = current_context()
    return carry(ctx, outgoing_context(ctx), target, metadata, invoke, streaming=streaming)


def carry(
    ctx: Context,
    out: Context,
    target: str | None,
    metadata: Any,
    invoke: Callable[[Any], Any],
    *,
    streaming: bool,
) -> Any:
    """``send``, once it is known that ``ctx`` leaves as ``out`` (signed, within limits)."""
    # Under the instrumentor's wire filter, this layer only injects; else it filters too.
    carried, inner = _carrying(metadata, out, target, filtering=not _wire.active)
    if inner is ctx:
        return invoke(tuple(carried))
    token = otel_context.attach(inner)
    try:
        call = invoke(tuple(carried))
    finally:
        otel_context.detach(token)
    # An inner interceptor may start its work (and inject) only when the responses are
    # iterated, as OpenTelemetry's does for server streaming: keep the context leaving this
    # process attached for that too.
    return _ResponsesInContext(call, inner) if streaming else call


async def asend(target: str | None, metadata: Any, invoke: Callable[[Any], Awaitable[Any]]) -> Any:
    """``send`` for grpc.aio, where the interceptors finish starting the call when awaited."""
    ctx = otel_context.get_current()
    carried, inner = _carrying(metadata, outgoing_context(ctx), target, filtering=True)
    md = grpc.aio.Metadata(*carried)
    if inner is ctx:
        return await invoke(md)
    token = otel_context.attach(inner)
    try:
        return await invoke(md)
    finally:
        otel_context.detach(token)


class _ResponsesInContext(wrapt.ObjectProxy):  # type: ignore[misc,type-arg]
    """The call object, unchanged, except that each response is pulled under ``ctx``."""

    def __init__(self, call: Any, ctx: Context) -> None:
        super().__init__(call)
        self._self_ctx = ctx

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        token = otel_context.attach(self._self_ctx)
        try:
            return next(self.__wrapped__)
        finally:
            otel_context.detach(token)


_SyncCallDetails = collections.namedtuple(
    "_SyncCallDetails",
    ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
)


class _CallDetails(_SyncCallDetails, grpc.ClientCallDetails):  # type: ignore[misc]
    """Used only when an outer interceptor passed call details that cannot be ``_replace``d."""


def _with_metadata(details: Any, metadata: Any) -> Any:
    replace = getattr(details, "_replace", None)
    if replace is not None:
        return replace(metadata=metadata)
    return _CallDetails(
        details.method,
        getattr(details, "timeout", None),
        metadata,
        getattr(details, "credentials", None),
        getattr(details, "wait_for_ready", None),
        getattr(details, "compression", None),
    )


class _Base:
    def __init__(self, target: str | None, *, managed: bool) -> None:
        self._target = target
        # Interceptors the instrumentor installed go quiet after uninstrument(); ones the
        # application added by hand stay on.
        self._managed = managed

    def _enabled(self) -> bool:
        return (_state.active or not self._managed) and not is_suppressed(current_context())


_SyncShapes: tuple[type, ...] = (
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
)


class ClientInterceptor(_Base, *_SyncShapes):  # type: ignore[misc]
    """Sync client interceptor for all four call shapes, bound to a channel target."""

    def _intercept(
        self, continuation: Callable[..., Any], details: Any, request: Any, streaming: bool
    ) -> Any:
        if not self._enabled():
            return continuation(details, request)
        return send(
            self._target,
            details.metadata,
            lambda metadata: continuation(_with_metadata(details, metadata), request),
            streaming=streaming,
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return self._intercept(continuation, details, request, streaming=False)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return self._intercept(continuation, details, request, streaming=True)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return self._intercept(continuation, details, requests, streaming=False)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return self._intercept(continuation, details, requests, streaming=True)


class _AioBase(_Base):
    async def _intercept(
        self, continuation: Callable[..., Awaitable[Any]], details: Any, request: Any
    ) -> Any:
        if not self._enabled():
            return await continuation(details, request)
        return await asend(
            self._target,
            details.metadata,
            lambda metadata: continuation(_with_metadata(details, metadata), request),
        )


class AioUnaryUnary(_AioBase, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    intercept_unary_unary = _AioBase._intercept


class AioUnaryStream(_AioBase, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    intercept_unary_stream = _AioBase._intercept


class AioStreamUnary(_AioBase, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    intercept_stream_unary = _AioBase._intercept


class AioStreamStream(_AioBase, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    intercept_stream_stream = _AioBase._intercept


AIO_CLASSES = (AioUnaryUnary, AioUnaryStream, AioStreamUnary, AioStreamStream)


class AioClientInterceptors(list[_AioBase]):
    """The four per-shape interceptors, as a list: ``interceptors=aio_client_interceptors(t)``,
    or spliced into a list of one's own with ``*``.

    grpc.aio files each interceptor object under the first call shape it matches, so one
    object cannot serve all four. Nested in another list by mistake
    (``interceptors=[aio_client_interceptors(t)]``) it is no interceptor at all, so grpc.aio
    refuses the channel at creation, naming it by this ``repr``, which says what to write:
    never a channel whose unary calls carry identity while its streams silently do not.
    """

    def __repr__(self) -> str:
        return (
            "[otel_identity_grpc.aio_client_interceptors(): a list of 4 interceptors, one per "
            "call shape, nested in another list; pass it as it is, "
            "interceptors=aio_client_interceptors(target), or spliced into yours, "
            "interceptors=[*aio_client_interceptors(target), ...]]"
        )


def aio_interceptors(target: str | None, *, managed: bool) -> AioClientInterceptors:
    return AioClientInterceptors(cls(target, managed=managed) for cls in AIO_CLASSES)


# -- the sync channel the instrumentor hands out -------------------------------------------


class _MultiCallable(_Base, _wire.CallShapes):
    """A channel's callable for one method: each call goes through ``carry``, unless it may go
    out untouched.

    The same effect as ``grpc.intercept_channel`` with ``ClientInterceptor``, without its
    per-call cost (call details, continuation, a fresh inner callable per call), which is
    most of what the hop costs on a loopback round trip.
    """

    def __init__(
        self,
        inner: Any,
        target: str | None,
        *,
        streaming: bool,
        injected_inside: bool,
    ) -> None:
        super().__init__(target, managed=True)
        self._inner = inner
        self._streaming = streaming
        self._injected_inside = injected_inside

    def _send(
        self, invoke: Callable[..., Any], request: Any, args: tuple[Any, ...], kwargs: Any
    ) -> Any:
        ctx = current_context()
        if not _state.active or is_suppressed(ctx):
            return invoke(request, *args, **kwargs)
        out = outgoing_context(ctx)
        if out is ctx and self._injected_inside and _wire.active:
            # OpenTelemetry's interceptor between us and the wire injects the current
            # context, and the wire filter under it decides egress: nothing to add.
            return invoke(request, *args, **kwargs)
        return self._carry(ctx, out, invoke, request=request, args=args, kwargs=kwargs)

    def _carry(
        self,
        ctx: Context,
        out: Context,
        invoke: Callable[..., Any],
        *,
        request: Any,
        args: tuple[Any, ...],
        kwargs: Any,
    ) -> Any:
        # (request, timeout=None, metadata=None, ...): metadata may come positionally.
        if len(args) >= 2:
            head, metadata, tail = args[:1], args[1], args[2:]
            return carry(
                ctx,
                out,
                self._target,
                metadata,
                lambda md: invoke(request, *head, md, *tail, **kwargs),
                streaming=self._streaming,
            )
        metadata = kwargs.pop("metadata", None)
        return carry(
            ctx,
            out,
            self._target,
            metadata,
            lambda md: invoke(request, *args, metadata=md, **kwargs),
            streaming=self._streaming,
        )


class IdentityChannel(grpc.Channel):  # type: ignore[misc]
    """A sync channel whose calls carry identity to ``target`` within the egress allow list."""

    def __init__(self, channel: Any, target: str | None) -> None:
        self._channel = channel
        self._target = target
        # OpenTelemetry's grpc instrumentation made ``channel`` (it wrapped channel creation
        # before we did): its interceptor sits between us and the wire.
        self._injected_inside = type(channel).__module__.startswith(
            "opentelemetry.instrumentation.grpc"
        )

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> _MultiCallable:
        inner = self._channel.unary_unary(method, *args, **kwargs)
        return self._callable(inner, streaming=False)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> _MultiCallable:
        inner = self._channel.unary_stream(method, *args, **kwargs)
        return self._callable(inner, streaming=True)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> _MultiCallable:
        inner = self._channel.stream_unary(method, *args, **kwargs)
        return self._callable(inner, streaming=False)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> _MultiCallable:
        inner = self._channel.stream_stream(method, *args, **kwargs)
        return self._callable(inner, streaming=True)

    def _callable(self, inner: Any, *, streaming: bool) -> _MultiCallable:
        return _MultiCallable(
            inner,
            self._target,
            streaming=streaming,
            injected_inside=self._injected_inside,
        )

    def subscribe(self, callback: Any, try_to_connect: bool = False) -> None:
        self._channel.subscribe(callback, try_to_connect=try_to_connect)

    def unsubscribe(self, callback: Any) -> None:
        self._channel.unsubscribe(callback)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> IdentityChannel:
        self._channel.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        return self._channel.__exit__(*exc_info)

    def __getattr__(self, name: str) -> Any:
        if name == "_channel":
            raise AttributeError(name)
        return getattr(self._channel, name)
