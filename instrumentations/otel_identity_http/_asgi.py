"""``IdentityASGIMiddleware``: every ASGI HTTP (and WebSocket) request is an ``http.server`` hop.

    app = IdentityASGIMiddleware(app, auth=[jwt_identity(key=..., algorithms=["HS256"])])

The admitted context is attached for the whole call of the inner app: the endpoint, streaming
response bodies and background tasks that run before the call returns all see the identity.

With OpenTelemetry's ASGI middleware right inside ours (no span current, no ``auth`` sources,
our baggage step in the global textmap), the hop is decided in that middleware's own extract
(see ``otel_identity.instrumentation.announce``), from the scope's headers as ours reads them;
the tap inside it decides the hop itself where that middleware does not extract (an excluded
URL, say). ``identity.missing`` still waits for the response to start, and the hop is counted
then, with its final outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from opentelemetry.context import Context

from otel_identity.instrumentation import (
    Arriving,
    attach,
    current_context,
    detach,
    is_suppressed,
    withdraw,
)
from otel_identity_http import _server, _tap
from otel_identity_http._server import AuthSource
from otel_identity_http._shapes import ASGIApp, Message, Receive, Scope, Send, scope_getter

RouteOf = Callable[[Scope], str | None]

_HOP_TYPES = frozenset({"http", "websocket"})
_RESPONSE_START = frozenset({"http.response.start", "websocket.accept", "websocket.close"})


def default_route(scope: Scope) -> str | None:
    path = scope.get("path")
    return path if isinstance(path, str) else None


def _first(scope: Scope, name: str) -> str | None:
    values = scope_getter.get(scope, name)
    return values[0] if values else None


def _rewritten(scope: Scope, ctx: Context) -> Scope:
    """A copy of ``scope`` whose baggage headers carry exactly the admitted baggage."""
    drop = {field.encode("latin-1") for field in _server.baggage_fields()}
    headers = [(n, v) for n, v in scope.get("headers") or () if n.lower() not in drop]
    for field, value in _server.encoded_baggage(ctx).items():
        headers.append((field.encode("latin-1"), value.encode("latin-1")))
    new = dict(scope)
    new["headers"] = headers
    return new


_ASGI = _server.Shape("asgi", scope_getter, _first, _rewritten, lambda scope: (scope, scope_getter))


async def call_asgi(
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    auth: Sequence[AuthSource] = (),
    route_of: RouteOf = default_route,
    continue_trace: bool = True,
    tapped: bool = False,
) -> None:
    """Run one ASGI request of ``app`` as an ``http.server`` hop (the middleware's body).

    ``tapped``: ``app`` is OpenTelemetry's ASGI middleware itself, with our re-attach tap
    right inside it; where that middleware's extract can decide the hop, it does
    (``_in_opentelemetry_pass``)."""
    if tapped and not auth and not continue_trace:
        marker = _server.announce_hop(scope, _ASGI, route_of)
        if marker is not None:
            await _in_opentelemetry_pass(app, scope, receive, send, marker)
            return
    scope, stash = _server.begin(
        scope, _ASGI, auth=auth, route_of=route_of, continue_trace=continue_trace
    )
    if stash is None:
        await app(scope, receive, send)
        return

    hop = stash.hop

    async def hop_send(message: Message) -> None:
        if not hop.settled and message.get("type") in _RESPONSE_START:
            _server.settle(hop)
        await send(message)

    token = attach(stash.context)  # detached below, in this task
    try:
        await app(scope, receive, hop_send)
    finally:
        _server.settle(hop)
        detach(token)


async def _in_opentelemetry_pass(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, marker: Arriving
) -> None:
    """Run the request with its hop announced: OpenTelemetry's middleware (``app``) decides
    it in its extract and keeps its context attached for the call, or, should it not
    extract, our tap inside it does (``_tap.ReattachASGI``). The hop is counted when the
    response starts, or when the call ends."""
    scope[_server.HANDLED_KEY] = True

    async def hop_send(message: Message) -> None:
        hop = marker.state
        starts = message.get("type") in _RESPONSE_START
        if starts and isinstance(hop, _server.ServerHop) and not hop.settled:
            _server.settle(hop)
        await send(message)

    try:
        await app(scope, receive, hop_send)
    finally:
        withdraw(marker)
        hop = marker.state
        if isinstance(hop, _server.ServerHop):
            # (OpenTelemetry's context is gone by now: the identity is the one that arrived)
            _server.settle(hop, hop.arrived is not None)


class IdentityASGIMiddleware:
    """ASGI middleware making each HTTP/WebSocket request an ``http.server`` hop.

    Same options as ``IdentityWSGIMiddleware``: ``auth`` sources, ``hop_route`` (default: the
    scope's ``path``) and ``continue_trace``. Lifespan and other scope types pass through.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        auth: Sequence[AuthSource] = (),
        hop_route: RouteOf | None = None,
        continue_trace: bool | None = None,
    ) -> None:
        self.app = app
        self.auth = tuple(auth)
        self.hop_route = hop_route or default_route
        self.continue_trace = continue_trace
        self._tapped = False
        self._tap_inside = False  # self.app is OpenTelemetry's middleware, our tap inside it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope.get("type") not in _HOP_TYPES
            or is_suppressed(current_context())
            or _server.HANDLED_KEY in scope
        ):
            await self.app(scope, receive, send)
            return
        if not self._tapped:
            found = _tap.install(self.app)
            if self.continue_trace is None:
                self.continue_trace = not found
            self._tap_inside = _tap.tap_inside(self.app)
            self._tapped = True
        await call_asgi(
            self.app,
            scope,
            receive,
            send,
            auth=self.auth,
            route_of=self.hop_route,
            continue_trace=self.continue_trace is not False,
            tapped=self._tap_inside,
        )
