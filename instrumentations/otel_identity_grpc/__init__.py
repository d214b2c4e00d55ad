"""otel-identity for gRPC: identity across every RPC, sync and asyncio, all four call shapes.

Everything, for every server and channel the process creates::

    from otel_identity_grpc import GrpcIdentityInstrumentor
    GrpcIdentityInstrumentor().instrument()

Or by hand, per server and channel::

    import otel_identity_grpc as oi_grpc

    server = grpc.server(pool, interceptors=[oi_grpc.server_interceptor()])
    channel = grpc.intercept_channel(
        grpc.insecure_channel(target), oi_grpc.client_interceptor(target)
    )
    aio_server = grpc.aio.server(interceptors=[oi_grpc.aio_server_interceptor()])
    aio_channel = grpc.aio.insecure_channel(
        target, interceptors=oi_grpc.aio_client_interceptors(target)
    )   # a list already: pass it as it is, or splice it, [*oi_grpc.aio_client_interceptors(t)]

Each RPC a server handles is a ``grpc.server`` hop: inbound policy, hop accounting, and
``identity.missing`` on the server span unless the method is in ``anonymous_routes``
(``/pkg.Service/Method`` or a pattern such as ``/grpc.health.v1.Health/*``). The identity stays
attached for the whole handler, including every step of a streaming response. A client sends
identity only to a target on the ``egress_allow`` list; for any other target it is removed and
``identity.stripped`` is recorded. Next to OpenTelemetry's own gRPC interceptors, put ours
inside theirs (after them in a server's list, last in a channel's); the instrumentor does.
On a server, better still, make both one interceptor, first in the list::

    server = grpc.server(pool, interceptors=[
        oi_grpc.server_interceptor(opentelemetry=otel_grpc.server_interceptor()), ...
    ])
"""

from __future__ import annotations

# Without its extra this package cannot work: say which extra, instead of a bare "No module
# named 'grpc'". A ModuleNotFoundError (not a plain ImportError) so that
# opentelemetry-instrument skips this entry point quietly when the library is absent.
try:
    import grpc
except ModuleNotFoundError as exc:
    raise ModuleNotFoundError(
        f"otel_identity_grpc needs grpcio ({exc.name!r} is not installed): "
        "pip install 'otel-identity[grpc]'",
        name=exc.name,
    ) from exc

import warnings
from typing import Any

from otel_identity_grpc import _client, _server
from otel_identity_grpc._instrumentor import GrpcIdentityInstrumentor
from otel_identity_grpc._metadata import MetadataGetter, MetadataSetter
from otel_identity_grpc.package import _instruments
from otel_identity_grpc.version import __version__


def server_interceptor(
    opentelemetry: Any = None,
) -> _server.ServerInterceptor | _server.OpenTelemetryAndIdentity:
    """The interceptor for ``grpc.server(..., interceptors=[...])``.

    Given OpenTelemetry's server interceptor (``opentelemetry=otel_grpc.server_interceptor()``),
    one interceptor doing the work of both, to put *first* in the list in its place: the same
    as OpenTelemetry's followed by ours, with less work per RPC (the hop is then decided in
    OpenTelemetry's extract with nothing of ours left to run around the handler). The
    instrumentor does this itself wherever it finds OpenTelemetry's interceptor in the list.
    """
    if opentelemetry is not None:
        return _server.OpenTelemetryAndIdentity(opentelemetry)
    return _server.ServerInterceptor()


def aio_server_interceptor(
    opentelemetry: Any = None,
) -> _server.AioServerInterceptor | _server.AioOpenTelemetryAndIdentity:
    """The interceptor for ``grpc.aio.server(interceptors=[...])``; given OpenTelemetry's
    (``otel_grpc.aio_server_interceptor()``), one doing the work of both, first in the list,
    as ``server_interceptor`` describes."""
    if opentelemetry is not None:
        return _server.AioOpenTelemetryAndIdentity(opentelemetry)
    return _server.AioServerInterceptor()


def client_interceptor(target: str | None = None) -> _client.ClientInterceptor:
    """The interceptor for ``grpc.intercept_channel(channel, ...)``, all four call shapes.

    ``target`` is the channel's target (``"billing.svc:50051"``); identity is sent only if it
    is on the egress allow list. Without a target, like ``oi.inject`` without a destination,
    no egress filtering applies.
    """
    return _client.ClientInterceptor(target, managed=False)


def aio_client_interceptors(target: str | None = None) -> _client.AioClientInterceptors:
    """The interceptors for ``grpc.aio.*_channel(..., interceptors=...)``: a list, one per
    call shape, because grpc.aio files each interceptor object under a single shape (the
    plural name is OpenTelemetry's, ``aio_client_interceptors()``, for the same reason).

    Pass it as it is or splice it (``[*aio_client_interceptors(t), other]``); nested in
    another list, grpc.aio refuses the channel with a message saying so. ``target`` as for
    ``client_interceptor``.
    """
    return _client.aio_interceptors(target, managed=False)


def aio_client_interceptor(target: str | None = None) -> _client.AioClientInterceptors:
    """Deprecated: ``aio_client_interceptors`` (it always returned a list of four)."""
    warnings.warn(
        "otel_identity_grpc.aio_client_interceptor() is deprecated: it returns a list, use "
        "aio_client_interceptors() (pass it as it is, or splice it with *)",
        DeprecationWarning,
        stacklevel=2,
    )
    return _client.aio_interceptors(target, managed=False)


__all__ = [
    "GrpcIdentityInstrumentor",
    "MetadataGetter",
    "MetadataSetter",
    "__version__",
    "_instruments",
    "aio_client_interceptor",
    "aio_client_interceptors",
    "aio_server_interceptor",
    "client_interceptor",
    "server_interceptor",
]
del grpc  # imported above only to name the extra when it is missing
