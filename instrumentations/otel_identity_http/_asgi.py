"""``IdentityASGIMiddleware``: every ASGI HTTP (and WebSocket) request is an ``http.server`` hop.

    app = IdentityASGIMiddleware(app, auth=[jwt_identity(key=..., algorithms=["HS256"])])

The admitted context is attached for the whole call of the inner app: the endpoint, streaming
response bodies and background tasks that run before the call returns all see the identity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter

from otel_identity.instrumentation import attach, current_context, detach, is_suppressed
from otel_identity_http import _server, _tap
from otel_identity_http._server import AuthSource
from otel_identity_http._shapes import ASGIApp, Message, Receive, Scope, Send

RouteOf = Callable[[Scope], str | None]

_HOP_TYPES = frozenset({"http", "websocket"})
_RESPONSE_START = frozenset({"http.response.start", "websocket.accept", "websocket.close"})


class ScopeGetter(Getter[Scope]):
    """Reads request headers from an ASGI scope (a list of ``(bytes, bytes)`` pairs)."""

    def get(self, carrier: Scope, key: str) -> list[str] | None:
        wanted = key.lower().encode("latin-1")
        values = [
            value.decode("latin-1")
            for name, value in carrier.get("headers") or ()
            if name.lower() == wanted
        ]
        return values or None

    def keys(self, carrier: Scope) -> list[str]:
        return [name.decode("latin-1").lower() for name, _ in carrier.get("headers") or ()]


scope_getter = ScopeGetter()


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


_ASGI = _server.Shape("asgi", scope_getter, _first, _rewritten)


async def call_asgi(
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    auth: Sequence[AuthSource] = (),
    route_of: RouteOf = default_route,
    continue_trace: bool = True,
) -> None:
    """Run one ASGI request of ``app`` as an ``http.server`` hop (the middleware's body)."""
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
            self._tapped = True
        await call_asgi(
            self.app,
            scope,
            receive,
            send,
            auth=self.auth,
            route_of=self.hop_route,
            continue_trace=self.continue_trace is not False,
        )
