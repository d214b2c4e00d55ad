"""HttpServerIdentityInstrumentor: Flask and Starlette get the hop with no code change."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import flask
import pytest
import requests
import wrapt
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware as OtelASGI
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.trace import SpanKind
from otel_identity_http import HttpServerIdentityInstrumentor
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import otel_identity as oi
from otel_identity import names

from .conftest import Server
from .test_otel_identity_http_auth import KEY, jwt_source, token
from .test_otel_identity_http_server import PARENT_ID, TRACEPARENT, _events, _server_span


@pytest.fixture
def server_instrumentor() -> Iterator[HttpServerIdentityInstrumentor]:
    instrumentor = HttpServerIdentityInstrumentor()
    yield instrumentor
    instrumentor.uninstrument()


def _whoami() -> dict[str, Any]:
    identity = oi.get_identity()
    return {
        "user": identity.user_id if identity else None,
        "verified": identity.verified if identity else None,
    }


def make_flask() -> flask.Flask:
    app = flask.Flask("instrumented")
    app.add_url_rule("/whoami", "whoami", _whoami)
    return app


async def starlette_whoami(request: Request) -> JSONResponse:
    return JSONResponse(_whoami())


def make_starlette(with_otel: bool) -> Starlette:
    app = Starlette(routes=[Route("/whoami", starlette_whoami)])
    if with_otel:
        app.add_middleware(OtelASGI)
    return app


@pytest.mark.parametrize("otel_first", [True, False])
def test_flask_app_gets_the_hop_alongside_otel_flask_instrumentation(
    wsgi_server: Callable[..., Server],
    server_instrumentor: HttpServerIdentityInstrumentor,
    spans: Any,
    otel_first: bool,
) -> None:
    oi.configure(inbound="strip")
    app = make_flask()
    otel = FlaskInstrumentor()
    if otel_first:
        otel.instrument_app(app)
        server_instrumentor.instrument(auth=[jwt_source()])
    else:
        server_instrumentor.instrument(auth=[jwt_source()])
        otel.instrument_app(app)
    try:
        handle = wsgi_server(app)
        headers = {
            "authorization": f"Bearer {token()}",
            "baggage": "user.id=forged",
            "traceparent": TRACEPARENT,
        }
        assert requests.get(handle.url("/whoami"), headers=headers, timeout=10).json() == {
            "user": "u-9",
            "verified": True,
        }
        server = _server_span(spans)
        assert server.kind is SpanKind.SERVER
        assert server.parent is not None
        assert format(server.parent.span_id, "016x") == PARENT_ID
        assert _events(server, names.EVENT_MISSING) == []
        assert [e[names.ATTR_REJECT_REASON] for e in _events(server, names.EVENT_REJECTED)] == [
            names.REASON_UNTRUSTED
        ]
        spans.clear()
        assert requests.get(handle.url("/whoami"), timeout=10).json()["user"] is None
        assert len(_events(_server_span(spans), names.EVENT_MISSING)) == 1
    finally:
        otel.uninstrument_app(app)


@pytest.mark.parametrize("with_otel", [True, False])
def test_starlette_app_gets_the_hop(
    asgi_server: Callable[..., Server],
    server_instrumentor: HttpServerIdentityInstrumentor,
    spans: Any,
    with_otel: bool,
) -> None:
    oi.configure(inbound="trust")
    server_instrumentor.instrument()
    handle = asgi_server(make_starlette(with_otel))
    headers = {"baggage": "user.id=u-3", "traceparent": TRACEPARENT}
    assert requests.get(handle.url("/whoami"), headers=headers, timeout=10).json()["user"] == "u-3"
    if with_otel:
        server = _server_span(spans)
        assert server.parent is not None
        assert format(server.parent.span_id, "016x") == PARENT_ID
        assert server.attributes is not None
        assert server.attributes.get("user.id") == "u-3"


def test_uninstrument_removes_the_hop_even_from_built_apps(
    wsgi_server: Callable[..., Server],
    asgi_server: Callable[..., Server],
    server_instrumentor: HttpServerIdentityInstrumentor,
) -> None:
    oi.configure(inbound="trust")
    server_instrumentor.instrument()
    starlette_handle = asgi_server(make_starlette(False))
    flask_handle = wsgi_server(make_flask())
    headers = {"baggage": "user.id=u-3"}
    for handle in (starlette_handle, flask_handle):
        assert requests.get(handle.url("/whoami"), headers=headers, timeout=10).json()["user"]
    server_instrumentor.uninstrument()
    for handle in (starlette_handle, flask_handle):
        seen = requests.get(handle.url("/whoami"), headers=headers, timeout=10).json()
        assert seen["user"] is None


def test_instrument_is_idempotent_and_patches_once(
    server_instrumentor: HttpServerIdentityInstrumentor,
) -> None:
    server_instrumentor.instrument()
    server_instrumentor.instrument()
    call = flask.Flask.__dict__["__call__"]
    assert isinstance(call, wrapt.FunctionWrapper)
    assert not isinstance(call.__wrapped__, wrapt.FunctionWrapper)
    assert call.__wrapped__.__qualname__ == "Flask.__call__"
    server_instrumentor.uninstrument()
    assert not isinstance(flask.Flask.__dict__["__call__"], wrapt.FunctionWrapper)


def test_jwt_key_is_not_needed_for_requests_without_a_token(
    wsgi_server: Callable[..., Server], server_instrumentor: HttpServerIdentityInstrumentor
) -> None:
    oi.configure(inbound="trust")
    server_instrumentor.instrument(auth=[jwt_source(key=KEY)])
    handle = wsgi_server(make_flask())
    seen = requests.get(handle.url("/whoami"), headers={"baggage": "user.id=u-1"}, timeout=10)
    assert seen.json() == {"user": "u-1", "verified": False}


@pytest.mark.parametrize("otel_first", [True, False])
def test_fastapi_app_gets_the_hop_alongside_otel_fastapi_instrumentation(
    asgi_server: Callable[..., Server],
    server_instrumentor: HttpServerIdentityInstrumentor,
    spans: Any,
    otel_first: bool,
) -> None:
    fastapi = pytest.importorskip("fastapi")
    otel_fastapi = pytest.importorskip("opentelemetry.instrumentation.fastapi")

    oi.configure(inbound="strip")
    app = fastapi.FastAPI()

    @app.get("/whoami")
    async def whoami() -> dict[str, Any]:
        return _whoami()

    otel = otel_fastapi.FastAPIInstrumentor
    if otel_first:
        otel.instrument_app(app)
        server_instrumentor.instrument(auth=[jwt_source()])
    else:
        server_instrumentor.instrument(auth=[jwt_source()])
        otel.instrument_app(app)
    try:
        handle = asgi_server(app)
        headers = {"authorization": f"Bearer {token()}", "traceparent": TRACEPARENT}
        seen = requests.get(handle.url("/whoami"), headers=headers, timeout=10).json()
        assert seen == {"user": "u-9", "verified": True}
        server = _server_span(spans)
        assert server.parent is not None
        assert format(server.parent.span_id, "016x") == PARENT_ID
        assert _events(server, names.EVENT_MISSING) == []
        spans.clear()
        assert requests.get(handle.url("/whoami"), timeout=10).json()["user"] is None
        assert len(_events(_server_span(spans), names.EVENT_MISSING)) == 1
    finally:
        otel.uninstrument_app(app)


def test_mounted_sub_application_is_one_hop_not_two(
    asgi_server: Callable[..., Server], server_instrumentor: HttpServerIdentityInstrumentor
) -> None:
    from starlette.routing import Mount

    from otel_identity import _telemetry

    oi.configure(inbound="trust")
    server_instrumentor.instrument()
    inner = Starlette(routes=[Route("/whoami", starlette_whoami)])
    handle = asgi_server(Starlette(routes=[Mount("/sub", app=inner)]))
    before = _telemetry.hop_counts().get(("http.server", "present"), 0)
    seen = requests.get(handle.url("/sub/whoami"), headers={"baggage": "user.id=u-3"}, timeout=10)
    assert seen.json()["user"] == "u-3"
    assert _telemetry.hop_counts().get(("http.server", "present"), 0) == before + 1
