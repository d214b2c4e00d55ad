"""``GrpcIdentityInstrumentor``: the interceptors on every server and channel grpc creates.

Placement is what makes it correct next to ``opentelemetry-instrumentation-grpc`` in either
load order:

- servers: ours goes right after OpenTelemetry's server interceptor (or first, if there is
  none), so OpenTelemetry's SERVER span is current when the hop is extracted and application
  interceptors further in already see the identity;
- asyncio channels: ours goes last, nearest the wire, after everything that injects (moved
  there if it was given earlier in the list);
- sync channels: the channel grpc returns is wrapped (``IdentityChannel``: what
  ``grpc.intercept_channel`` with our interceptor does, at a fraction of the per-call cost)
  to inject, and egress is decided under every interceptor, on the metadata grpc's own
  channel receives (``_wire``), so it holds whatever injected it.

OpenTelemetry replaces ``grpc.server``/``grpc.aio.*`` with plain functions that keep a
reference to what was there, so a patch of ours underneath cannot always be removed: every
patch and every interceptor it installed checks ``_state.active`` and steps aside once
uninstrumented, and ``instrument()`` never stacks a second interceptor of ours.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Collection, Sequence
from typing import Any

from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, unwrap
from wrapt import wrap_function_wrapper

from otel_identity_grpc import _client, _server, _state, _wire
from otel_identity_grpc.package import _instruments

_SERVER_PARAMS = (
    "thread_pool",
    "handlers",
    "interceptors",
    "options",
    "maximum_concurrent_rpcs",
    "compression",
    "xds",
)
_AIO_SERVER_PARAMS = (
    "migration_thread_pool",
    "handlers",
    "interceptors",
    "options",
    "maximum_concurrent_rpcs",
    "compression",
)
_AIO_INSECURE_PARAMS = ("target", "options", "compression", "interceptors")
_AIO_SECURE_PARAMS = ("target", "credentials", "options", "compression", "interceptors")

_creating_channel = contextvars.ContextVar("otel_identity_grpc.creating_channel", default=False)


def _on() -> bool:
    return _state.active and is_instrumentation_enabled()


def _as_kwargs(
    args: tuple[Any, ...], kwargs: dict[str, Any], params: Sequence[str]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Positional arguments from ``interceptors`` on moved to keywords, so every wrapper in a
    chain (OpenTelemetry's reads only the keyword) sees the same list."""
    index = params.index("interceptors")
    if len(args) <= index:
        return args, dict(kwargs)
    moved = dict(zip(params[index:], args[index:], strict=False))
    return args[:index], {**kwargs, **moved}


def _is_opentelemetry(interceptor: object) -> bool:
    return type(interceptor).__module__.startswith("opentelemetry.instrumentation.grpc")


def _with_server_interceptor(
    current: Sequence[Any] | None, ours: object, fused: Callable[..., object]
) -> list[Any]:
    """The server's interceptors with ours: made one stage with OpenTelemetry's (``fused``)
    where that one is first in the list already (the instrumentors' other load order, or a
    list given by hand); right after it where it is further down; else first
    (OpenTelemetry's instrumentor, running after ours, then puts its own before it)."""
    interceptors = list(current or ())
    if any(isinstance(i, _OURS) for i in interceptors):
        return interceptors
    position = None
    for index, interceptor in enumerate(interceptors):
        if _is_opentelemetry(interceptor):
            position = index
    if position == 0:
        interceptors[0] = fused(interceptors[0], managed=True)
    else:
        interceptors.insert(0 if position is None else position + 1, ours)
    return interceptors


_OURS = (
    _server.ServerInterceptor,
    _server.AioServerInterceptor,
    _server.OpenTelemetryAndIdentity,
    _server.AioOpenTelemetryAndIdentity,
)


def _patch_server(
    wrapped: Callable[..., Any], instance: object, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if not _on():
        return wrapped(*args, **kwargs)
    args, kwargs = _as_kwargs(args, kwargs, _SERVER_PARAMS)
    kwargs["interceptors"] = _with_server_interceptor(
        kwargs.get("interceptors"),
        _server.ServerInterceptor(managed=True),
        _server.OpenTelemetryAndIdentity,
    )
    return wrapped(*args, **kwargs)


def _patch_aio_server(
    wrapped: Callable[..., Any], instance: object, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if not _on():
        return wrapped(*args, **kwargs)
    args, kwargs = _as_kwargs(args, kwargs, _AIO_SERVER_PARAMS)
    kwargs["interceptors"] = _with_server_interceptor(
        kwargs.get("interceptors"),
        _server.AioServerInterceptor(managed=True),
        _server.AioOpenTelemetryAndIdentity,
    )
    return wrapped(*args, **kwargs)


def _target_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    target = args[0] if args else kwargs.get("target")
    return target if isinstance(target, str) else None


def _patch_channel(
    wrapped: Callable[..., Any], instance: object, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    # A second patch of ours further down the chain (left behind under another
    # instrumentation's wrapper) must not add a second interceptor.
    if not _on() or _creating_channel.get():
        return wrapped(*args, **kwargs)
    reset = _creating_channel.set(True)
    try:
        channel = wrapped(*args, **kwargs)
    finally:
        _creating_channel.reset(reset)
    return _client.IdentityChannel(channel, _target_of(args, kwargs))


def _aio_channel_patch(params: Sequence[str]) -> Callable[..., Any]:
    def patch(
        wrapped: Callable[..., Any],
        instance: object,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        if not _on():
            return wrapped(*args, **kwargs)
        args, kwargs = _as_kwargs(args, kwargs, params)
        given = list(kwargs.get("interceptors") or ())
        ours: list[object] = [i for i in given if isinstance(i, _client.AIO_CLASSES)]
        if not ours:
            ours = list(_client.aio_interceptors(_target_of(args, kwargs), managed=True))
        # Ours last, nearest the wire, whatever was put after it: egress is decided on what
        # every other interceptor injected.
        rest = [i for i in given if not isinstance(i, _client.AIO_CLASSES)]
        kwargs["interceptors"] = [*rest, *ours]
        return wrapped(*args, **kwargs)

    return patch


_patch_aio_insecure_channel = _aio_channel_patch(_AIO_INSECURE_PARAMS)
_patch_aio_secure_channel = _aio_channel_patch(_AIO_SECURE_PARAMS)


def _patches() -> list[tuple[Any, str, Callable[..., Any]]]:
    import grpc
    import grpc.aio

    return [
        (grpc, "server", _patch_server),
        (grpc, "insecure_channel", _patch_channel),
        (grpc, "secure_channel", _patch_channel),
        (grpc.aio, "server", _patch_aio_server),
        (grpc.aio, "insecure_channel", _patch_aio_insecure_channel),
        (grpc.aio, "secure_channel", _patch_aio_secure_channel),
    ]


def _ours_in_chain(function: object, patch: Callable[..., Any]) -> bool:
    """Whether ``patch`` is one of the wrapt layers of ``function``."""
    seen = 0
    while function is not None and seen < 32:
        if getattr(function, "_self_wrapper", None) is patch:
            return True
        function = getattr(function, "__wrapped__", None)
        seen += 1
    return False


def _log_no_wire_filter() -> None:  # pragma: no cover - see _wire.internals_known
    import logging

    logging.getLogger("otel_identity").warning(
        "otel-identity: this grpc has no known channel class; egress is decided by our "
        "interceptor at its place in each channel's chain"
    )


class GrpcIdentityInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Installs the otel-identity interceptors on ``grpc.server``, ``grpc.aio.server`` and
    channel creation (``grpc.insecure_channel``/``secure_channel`` and their asyncio twins).

        GrpcIdentityInstrumentor().instrument()
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        for module, name, patch in _patches():
            if not _ours_in_chain(getattr(module, name), patch):
                wrap_function_wrapper(module, name, patch)
        if not _wire.install():  # pragma: no cover - a grpc without the known channel class
            _log_no_wire_filter()
        _state.active = True

    def _uninstrument(self, **kwargs: Any) -> None:
        _state.active = False
        _wire.uninstall()
        for module, name, patch in _patches():
            if getattr(getattr(module, name), "_self_wrapper", None) is patch:
                unwrap(module, name)
