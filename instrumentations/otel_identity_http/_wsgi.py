"""``IdentityWSGIMiddleware``: every WSGI request is an ``http.server`` hop.

    app.wsgi_app = IdentityWSGIMiddleware(app.wsgi_app, auth=[jwt_identity(key=..., ...)])

The admitted context is current while the app runs and while each chunk of the response is
produced (a streaming generator sees the identity too). It is attached per call rather than
left attached between the app's return and ``close()``: a server that forgets to close the
iterable must not leave one request's identity behind for the next request on its thread.

With OpenTelemetry's WSGI middleware right inside ours (no span current, no ``auth`` sources,
our baggage step in the global textmap), the hop is decided in that middleware's own extract
(see ``otel_identity.instrumentation.announce``): ours announces it for the call, and neither
extracts, rewrites headers nor attaches. ``identity.missing`` still waits for the response to
start, and the hop is counted then, with its final outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN

import otel_identity as oi
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
from otel_identity_http._shapes import (
    Environ,
    HopIterable,
    StartResponse,
    WSGIApp,
    environ_getter,
    environ_key,
)

RouteOf = Callable[[Environ], str | None]


def _header(environ: Environ, name: str) -> str | None:
    value = environ.get(environ_key(name))
    return value if isinstance(value, str) else None


def default_route(environ: Environ) -> str | None:
    path = environ.get("PATH_INFO")
    return path if isinstance(path, str) else None


def _rewritten(environ: Environ, ctx: Context) -> Environ:
    """A copy of ``environ`` whose baggage headers carry exactly the admitted baggage."""
    new = dict(environ)
    for field in _server.baggage_fields():
        new.pop(environ_key(field), None)
    for field, value in _server.encoded_baggage(ctx).items():
        new[environ_key(field)] = value
    return new


_BAGGAGE_KEY = environ_key("baggage")


def _announced(environ: Environ) -> tuple[str, None]:
    """The request's baggage header as an announcement reads it: a WSGI server joins the
    header's lines into one string already."""
    header = environ.get(_BAGGAGE_KEY)
    return (header if isinstance(header, str) else ""), None


_WSGI = _server.Shape("wsgi", environ_getter, _header, _rewritten, _announced)


def call_wsgi(
    app: WSGIApp,
    environ: Environ,
    start_response: StartResponse,
    *,
    auth: Sequence[AuthSource] = (),
    route_of: RouteOf = default_route,
    continue_trace: bool = True,
    tapped: bool = False,
) -> Iterable[bytes]:
    """Run one WSGI request of ``app`` as an ``http.server`` hop (the middleware's body).

    ``tapped``: ``app`` is OpenTelemetry's WSGI middleware itself, with our re-attach tap
    right inside it. That middleware attaches a context of its own, built from the headers
    alone, before anything else runs, and the tap puts ours back on top of it; so ours is not
    attached around the call. (Attaching it there would also leave it behind: OpenTelemetry
    detaches its own context only once the body is sent, back to whatever it replaced.)
    Where that middleware's extract can decide the hop, it does (``_in_opentelemetry_pass``).
    """
    if tapped and not auth and not continue_trace:
        marker = _server.announce_hop(environ, _WSGI, route_of)
        if marker is not None:
            return _in_opentelemetry_pass(app, environ, start_response, marker)
    environ, stash = _server.begin(
        environ, _WSGI, auth=auth, route_of=route_of, continue_trace=continue_trace
    )
    if stash is None:
        return app(environ, start_response)

    hop = stash.hop

    def hop_start_response(*args: Any, **kwargs: Any) -> Any:
        if not hop.settled:
            _server.settle(hop)
        return start_response(*args, **kwargs)

    outside = tapped and not continue_trace
    result = _run(app, environ, hop_start_response, stash, tap_attaches=outside)
    if isinstance(result, (list, tuple)):  # nothing of the app runs while it is sent
        _server.settle(hop)
        return result
    if stash.used:
        return result  # the tap inside produces the body under the hop's context already
    return HopIterable(result, stash.context, hop)


def _run(
    app: WSGIApp,
    environ: Environ,
    start_response: StartResponse,
    stash: _server.Stash,
    *,
    tap_attaches: bool,
) -> Iterable[bytes]:
    """Call ``app`` under the hop's context (see ``call_wsgi``); a failing app settles it."""
    if tap_attaches and trace.get_current_span(stash.context) is INVALID_SPAN:
        # No span is current, so OpenTelemetry's middleware starts the SERVER span from the
        # headers, in a context of its own; the tap restores ours inside it.
        try:
            return app(environ, start_response)
        except BaseException:
            _server.settle(stash.hop, oi.get_identity(stash.context) is not None)
            raise
    token = attach(stash.context)  # detached below, in this frame
    try:
        return app(environ, start_response)
    except BaseException:
        _server.settle(stash.hop)
        raise
    finally:
        detach(token)


def _in_opentelemetry_pass(
    app: WSGIApp, environ: Environ, start_response: StartResponse, marker: Arriving
) -> Iterable[bytes]:
    """Run the request with its hop announced: OpenTelemetry's middleware (``app``) decides
    it in its extract and attaches its context, or, should it not extract, our tap inside it
    does (``_tap.ReattachWSGI``). The announcement ends with the call (worker threads are
    reused); the hop is counted when the response starts, or when its body is closed."""
    environ[_server.HANDLED_KEY] = True

    def hop_start_response(*args: Any, **kwargs: Any) -> Any:
        hop = marker.state
        if isinstance(hop, _server.ServerHop) and not hop.settled:
            _server.settle(hop)
        return start_response(*args, **kwargs)

    try:
        result = app(environ, hop_start_response)
    except BaseException:
        if isinstance(marker.state, _server.ServerHop):
            _server.settle(marker.state, marker.state.arrived is not None)
        raise
    finally:
        withdraw(marker)
    hop = marker.state
    if not isinstance(hop, _server.ServerHop) or hop.settled:
        return result
    if isinstance(result, (list, tuple)):
        _server.settle(hop)
        return result
    return _SettledAtClose(result, hop)


class _SettledAtClose:
    """A response body produced as it is, whose hop is settled when the server closes it (an
    app that answers lazily, or fails before it starts its response).

    Nothing is attached per chunk: OpenTelemetry's middleware keeps the hop's context attached
    until its body is sent (attaching on top of that would restore it after OpenTelemetry's
    own detach, and leave it behind in the worker thread)."""

    __slots__ = ("_hop", "_inner")

    def __init__(self, inner: Iterable[bytes], hop: _server.ServerHop) -> None:
        self._inner = inner
        self._hop = hop

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._inner)

    def close(self) -> None:
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            # (OpenTelemetry's context is gone by now: the identity is the one that arrived)
            _server.settle(self._hop, self._hop.arrived is not None)


class IdentityWSGIMiddleware:
    """WSGI middleware making each request an ``http.server`` hop.

    ``auth``: auth sources tried in order before the app runs (``jwt_identity(...)``); the
    first that returns an identity sets it, one that rejects the credentials leaves the
    request without identity and records ``identity.rejected``. ``hop_route``: the route used
    for the anonymous-route exemption (default: ``PATH_INFO``). ``continue_trace``: whether the
    app's spans continue the caller's trace under this middleware; by default yes, unless an
    OpenTelemetry server instrumentation is found inside (it starts the SERVER span itself,
    and only does so when no span is current).
    """

    def __init__(
        self,
        app: WSGIApp,
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

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if _server.HANDLED_KEY in environ or is_suppressed(current_context()):
            return self.app(environ, start_response)
        if not self._tapped:
            found = _tap.install(self.app)
            if self.continue_trace is None:
                self.continue_trace = not found
            self._tap_inside = _tap.tap_inside(self.app)
            self._tapped = True
        return call_wsgi(
            self.app,
            environ,
            start_response,
            auth=self.auth,
            route_of=self.hop_route,
            continue_trace=self.continue_trace is not False,
            tapped=self._tap_inside,
        )
