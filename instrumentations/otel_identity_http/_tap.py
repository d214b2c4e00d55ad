"""Re-attach taps: our admitted context, put back inside OpenTelemetry's server middleware.

OpenTelemetry's WSGI/ASGI middleware (and its Flask instrumentation) attach a brand-new context
built from the request headers. When that middleware runs inside ours, the identity state we
admitted (identity set by the app's authentication, the hop and its held events) would be gone
in the handler. The outer middleware leaves it in the environ/scope (``STASH_KEY``), and a tap
placed right inside OpenTelemetry's middleware attaches it again, on top of its server span.
The header rewrite of ``_server`` stays as the fallback for instrumentations no tap reaches.

Where our middleware announced the hop for OpenTelemetry's extract instead (``_wsgi``,
``_asgi``), there is no stash: the tap then only checks that the announcement was taken, and
decides the hop itself if OpenTelemetry's middleware did not extract.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter

from otel_identity import instrumentation as oii
from otel_identity.instrumentation import Arriving, announced, attach, current_context, detach
from otel_identity_http import _server
from otel_identity_http._shapes import (
    ASGIApp,
    Environ,
    HopIterable,
    Receive,
    Scope,
    Send,
    StartResponse,
    WSGIApp,
    environ_getter,
    scope_getter,
)

_FLASK_TOKEN = "otel_identity.flask_token"  # noqa: S105 - a flask.g key, not a secret


class ReattachWSGI:
    """Sits right inside OpenTelemetry's WSGI middleware."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        stash = environ.get(_server.STASH_KEY)
        if not isinstance(stash, _server.Stash):
            marker = announced(_server.HOP)
            if marker is not None and marker.open:
                return self._decide(marker, environ, start_response)
            return self.app(environ, start_response)
        ctx = _server.restored(current_context(), stash)
        token = attach(ctx)  # detached below, in this frame
        try:
            result = self.app(environ, start_response)
        finally:
            detach(token)
        if isinstance(result, (list, tuple)):
            return result
        return HopIterable(result, ctx, stash.hop)

    def _decide(
        self, marker: Arriving, environ: Environ, start_response: StartResponse
    ) -> Iterable[bytes]:
        """The announced hop, decided here (see ``_decided_here``) for the call and its body."""
        ctx = _decided_here(marker, environ, environ_getter)
        hop = marker.state
        token = attach(ctx)  # detached below, in this frame
        try:
            result = self.app(environ, start_response)
        finally:
            detach(token)
        if isinstance(result, (list, tuple)) or not isinstance(hop, _server.ServerHop):
            return result
        return HopIterable(result, ctx, hop)


def _decided_here(marker: Arriving, carrier: Any, getter: Getter[Any]) -> Context:
    """The announced hop, which OpenTelemetry's middleware did not decide in an extract (it
    skips excluded URLs, and extracts only when no span is current): decided here, on top of
    its context, so the request still runs with its identity and is counted once."""
    ctx = marker.decide(current_context(), carrier, getter)
    hop = marker.state
    if isinstance(hop, _server.ServerHop):
        span = _server.take_server_span(hop, ctx)
        if span is not None:
            _server.stamp(span, ctx)  # it started before the identity was known
    return ctx


class ReattachASGI:
    """Sits right inside OpenTelemetry's ASGI middleware."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stash = scope.get(_server.STASH_KEY)
        if not isinstance(stash, _server.Stash):
            marker = announced(_server.HOP)
            if marker is not None and marker.open:
                await self._decide(marker, scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        token = attach(_server.restored(current_context(), stash))  # detached in this task
        try:
            await self.app(scope, receive, send)
        finally:
            detach(token)

    async def _decide(self, marker: Arriving, scope: Scope, receive: Receive, send: Send) -> None:
        """The announced hop, decided here (see ``_decided_here``) for the call."""
        token = attach(_decided_here(marker, scope, scope_getter))  # detached in this task
        try:
            await self.app(scope, receive, send)
        finally:
            detach(token)


def _flask_before() -> None:
    import flask

    stash = flask.request.environ.get(_server.STASH_KEY)
    if isinstance(stash, _server.Stash):
        ctx = _server.restored(otel_context.get_current(), stash)
        flask.g.setdefault(_FLASK_TOKEN, otel_context.attach(ctx))


def _flask_teardown(_exc: BaseException | None) -> None:
    import flask

    token = flask.g.pop(_FLASK_TOKEN, None)
    if token is not None:
        otel_context.detach(token)


def tap_inside(app: object) -> bool:
    """Whether ``app`` is OpenTelemetry's WSGI or ASGI middleware itself with our tap right
    inside."""
    cls = type(app)
    if cls.__name__ != "OpenTelemetryMiddleware":
        return False
    if cls.__module__ == "opentelemetry.instrumentation.wsgi":
        return isinstance(getattr(app, "wsgi", None), ReattachWSGI)
    if cls.__module__ == "opentelemetry.instrumentation.asgi":
        return isinstance(getattr(app, "app", None), ReattachASGI)
    return False


def install(app: object) -> bool:
    """Put a tap inside the OpenTelemetry server instrumentation found in ``app`` (once).

    Returns whether an OpenTelemetry server instrumentation was found.
    """
    nodes = _server.find_otel_servers(app)
    try:
        for node in nodes:  # a middleware object: the tap goes right inside it
            module = type(node).__module__ or ""
            if module.startswith("opentelemetry.instrumentation.wsgi"):
                if not isinstance(node.wsgi, ReattachWSGI):  # type: ignore[attr-defined]
                    node.wsgi = ReattachWSGI(node.wsgi)  # type: ignore[attr-defined]
                return True
            if module.startswith("opentelemetry.instrumentation.asgi"):
                if not isinstance(node.app, ReattachASGI):  # type: ignore[attr-defined]
                    node.app = ReattachASGI(node.app)  # type: ignore[attr-defined]
                return True
        for node in nodes:
            if hasattr(node, "before_request_funcs") and hasattr(node, "teardown_request_funcs"):
                _install_flask(node)
                return True
    except Exception:  # noqa: BLE001 - without a tap the header rewrite still holds policy
        oii.log_internal_error("http.tap")
    return bool(nodes)


def _install_flask(app: Any) -> None:
    # Flask with OpenTelemetry's Flask instrumentation: its span and context start in a
    # before_request function, so ours must run after it (and tear down before it).
    before = app.before_request_funcs.setdefault(None, [])
    if _flask_before not in before:
        before.append(_flask_before)
        app.teardown_request_funcs.setdefault(None, []).append(_flask_teardown)
