"""The http.server hop on real loopback servers, alone and with OpenTelemetry's middleware."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware as OtelASGI
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware as OtelWSGI
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind
from otel_identity_http import IdentityASGIMiddleware, IdentityWSGIMiddleware

import otel_identity as oi
from otel_identity import names

from .conftest import Server

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
IDENTITY_BAGGAGE = "user.id=u-1,tenant.id=acme,other=kept"


def _seen() -> dict[str, Any]:
    identity = oi.get_identity()
    span = trace.get_current_span()
    return {
        "user": identity.user_id if identity else None,
        "tenant": identity.tenant_id if identity else None,
        "trace_id": format(span.get_span_context().trace_id, "032x"),
    }


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
    """Streams its answer: the identity is read again while the body is produced."""
    before = _seen()
    start_response("200 OK", [("Content-Type", "application/json")])

    def body() -> Iterator[bytes]:
        yield json.dumps({"before": before, "during": _seen()}).encode()

    return body()


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    before = _seen()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send(
        {
            "type": "http.response.body",
            "body": json.dumps({"before": before, "during": _seen()}).encode(),
        }
    )


def _stack(transport: str, order: str | None) -> Any:
    ours: Any = IdentityWSGIMiddleware if transport == "wsgi" else IdentityASGIMiddleware
    otel: Any = OtelWSGI if transport == "wsgi" else OtelASGI
    app: Any = wsgi_app if transport == "wsgi" else asgi_app
    if order is None:
        return ours(app)
    if order == "identity_outer":
        return ours(otel(app))
    return otel(ours(app))


@pytest.fixture
def serve(
    wsgi_server: Callable[..., Server], asgi_server: Callable[..., Server]
) -> Callable[[str, str | None], Server]:
    def start(transport: str, order: str | None) -> Server:
        starter = wsgi_server if transport == "wsgi" else asgi_server
        return starter(_stack(transport, order))

    return start


def _events(span: ReadableSpan, name: str) -> list[dict[str, Any]]:
    return [dict(e.attributes or {}) for e in span.events if e.name == name]


def wait_for_spans(spans: Any, done: Callable[[list[ReadableSpan]], bool]) -> list[ReadableSpan]:
    """Finished spans once ``done`` holds: a server ends its span after the client has read
    the response, so the test waits (bounded) instead of racing it."""
    deadline = time.monotonic() + 5
    while True:
        finished = list(spans.get_finished_spans())
        if done(finished) or time.monotonic() > deadline:
            time.sleep(0.05)  # let a span that should not exist show up, if it would
            return list(spans.get_finished_spans())
        time.sleep(0.01)


def wait_for_server_spans(spans: Any, count: int) -> None:
    wait_for_spans(spans, lambda f: sum(s.kind is SpanKind.SERVER for s in f) >= count)


def _server_span(spans: Any) -> ReadableSpan:
    finished = wait_for_spans(spans, lambda f: any(s.kind is SpanKind.SERVER for s in f))
    server = [s for s in finished if s.kind is SpanKind.SERVER]
    assert len(server) == 1, [s.name for s in spans.get_finished_spans()]
    return server[0]


def _get(server: Server, path: str = "/orders", baggage: str | None = None) -> dict[str, Any]:
    headers = {"traceparent": TRACEPARENT}
    if baggage is not None:
        headers["baggage"] = baggage
    response = requests.get(server.url(path), headers=headers, timeout=10)
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


TRANSPORTS = ["wsgi", "asgi"]
ORDERS = ["identity_outer", "identity_inner"]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("order", ORDERS)
def test_trusted_identity_reaches_handler_and_body_under_otel_server_span(
    serve: Callable[..., Server], spans: Any, transport: str, order: str
) -> None:
    oi.configure(inbound="trust")
    seen = _get(serve(transport, order), baggage=IDENTITY_BAGGAGE)
    assert seen["before"]["user"] == "u-1"
    assert seen["during"]["user"] == "u-1"
    assert seen["during"]["tenant"] == "acme"
    server = _server_span(spans)
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.parent is not None
    assert format(server.parent.span_id, "016x") == PARENT_ID
    assert server.attributes is not None
    assert server.attributes.get("user.id") == "u-1"
    assert _events(server, names.EVENT_MISSING) == []


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("order", ORDERS)
def test_strip_policy_holds_inside_handler_whatever_the_middleware_order(
    serve: Callable[..., Server], spans: Any, transport: str, order: str
) -> None:
    oi.configure(inbound="strip")
    seen = _get(serve(transport, order), baggage=IDENTITY_BAGGAGE)
    assert seen["before"]["user"] is None
    assert seen["during"]["user"] is None
    server = _server_span(spans)
    assert server.attributes is not None
    assert "user.id" not in server.attributes
    rejected = _events(server, names.EVENT_REJECTED)
    assert [e[names.ATTR_REJECT_REASON] for e in rejected] == [names.REASON_UNTRUSTED]
    assert len(_events(server, names.EVENT_MISSING)) == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("inbound", ["trust", "strip"])
def test_missing_identity_is_recorded_once_on_the_server_span(
    serve: Callable[..., Server], spans: Any, transport: str, order: str, inbound: str
) -> None:
    oi.configure(inbound=inbound)
    seen = _get(serve(transport, order), baggage="other=1")
    assert seen["before"]["user"] is None
    server = _server_span(spans)
    missing = _events(server, names.EVENT_MISSING)
    assert len(missing) == 1
    assert missing[0][names.ATTR_HOP] == "http.server"
    others = [s for s in spans.get_finished_spans() if s.context != server.context]
    assert all(not _events(s, names.EVENT_MISSING) for s in others)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("order", ORDERS)
def test_anonymous_route_records_no_missing_identity(
    serve: Callable[..., Server], spans: Any, transport: str, order: str
) -> None:
    oi.configure(inbound="strip", anonymous_routes=["/healthz"])
    server_handle = serve(transport, order)
    _get(server_handle, "/healthz")
    assert _events(_server_span(spans), names.EVENT_MISSING) == []
    spans.clear()
    _get(server_handle, "/orders")
    assert len(_events(_server_span(spans), names.EVENT_MISSING)) == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_without_otel_middleware_app_spans_continue_the_callers_trace(
    serve: Callable[..., Server], spans: Any, transport: str
) -> None:
    oi.configure(inbound="trust")
    seen = _get(serve(transport, None), baggage=IDENTITY_BAGGAGE)
    assert seen["before"]["trace_id"] == TRACE_ID
    assert seen["during"]["user"] == "u-1"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_missing_identity_without_any_server_span_goes_to_the_first_app_span(
    wsgi_server: Callable[..., Server],
    asgi_server: Callable[..., Server],
    spans: Any,
    tracer: trace.Tracer,
    transport: str,
) -> None:
    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with tracer.start_as_current_span("work"):
            start_response("200 OK", [])
            return [b"ok"]

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        with tracer.start_as_current_span("work"):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

    if transport == "wsgi":
        handle = wsgi_server(IdentityWSGIMiddleware(wsgi))
    else:
        handle = asgi_server(IdentityASGIMiddleware(asgi))
    assert requests.get(handle.url(), timeout=10).status_code == 200
    (work,) = wait_for_spans(spans, bool)
    assert len(_events(work, names.EVENT_MISSING)) == 1


HOSTILE = [
    "user.id=" + "x" * 20000,
    ",".join(f"k{i}=v" for i in range(500)) + ",user.id=u-1",
    "user.id=%ZZ%,tenant.id=\x7f",
    "user.id=a\\u0000b;;;==,,,",
    "=,=,=;",
    "user.id=" + "%0A" * 10 + "evil",
    "user.id=\u00e9\u00e8",
]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("order", ORDERS)
def test_hostile_baggage_headers_never_break_the_request(
    serve: Callable[..., Server], spans: Any, transport: str, order: str
) -> None:
    oi.configure(inbound="trust")
    handle = serve(transport, order)
    for header in HOSTILE:
        headers = {"baggage": header.encode("utf-8").decode("latin-1")}
        response = requests.get(handle.url(), headers=headers, timeout=10)
        assert response.status_code == 200, header[:40]
        user = response.json()["before"]["user"]
        assert user is None or not any(c in user for c in "\n\x00\x7f"), header[:40]
    # A pile of junk members must not cost the identity member that fits.
    ok = ",".join(f"k{i}=v" for i in range(500)) + ",user.id=u-1"
    response = requests.get(handle.url(), headers={"baggage": ok}, timeout=10)
    assert response.json()["before"]["user"] == "u-1"


def test_context_is_detached_after_each_wsgi_request(
    wsgi_server: Callable[..., Server],
) -> None:
    oi.configure(inbound="trust")
    handle = wsgi_server(IdentityWSGIMiddleware(wsgi_app))
    first = requests.get(handle.url(), headers={"baggage": "user.id=u-1"}, timeout=10).json()
    second = requests.get(handle.url(), timeout=10).json()
    assert first["during"]["user"] == "u-1"
    assert second["before"]["user"] is None
    assert second["during"]["user"] is None


def test_starlette_streaming_response_produces_every_chunk_under_the_identity(
    asgi_server: Callable[..., Server],
) -> None:
    import asyncio

    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    async def chunks() -> Any:
        for _ in range(3):
            await asyncio.sleep(0.01)
            identity = oi.get_identity()
            yield (identity.user_id if identity else "none").encode() + b";"

    async def stream(request: Any) -> StreamingResponse:
        return StreamingResponse(chunks())

    oi.configure(inbound="trust")
    handle = asgi_server(IdentityASGIMiddleware(Starlette(routes=[Route("/s", stream)])))
    response = requests.get(handle.url("/s"), headers={"baggage": "user.id=u-1"}, timeout=10)
    assert response.text == "u-1;u-1;u-1;"


def _environ(baggage: str | None) -> dict[str, Any]:
    from wsgiref.util import setup_testing_defaults

    environ: dict[str, Any] = {"HTTP_TRACEPARENT": TRACEPARENT, "PATH_INFO": "/orders"}
    if baggage is not None:
        environ["HTTP_BAGGAGE"] = baggage
    setup_testing_defaults(environ)
    return environ


def _http_hops() -> dict[str, int]:
    from otel_identity import _telemetry

    return {k[1]: v for k, v in _telemetry.hop_counts().items() if k[0] == "http.server"}


def _grown(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


@pytest.mark.parametrize("app_returns", ["list", "stream"])
def test_stacked_wsgi_request_leaves_nothing_on_the_thread(spans: Any, app_returns: str) -> None:
    # OpenTelemetry's middleware detaches its context once the body is sent, back to what it
    # replaced: that must be the server's own context, never the request's identity.
    oi.configure(inbound="trust")

    def listing(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [])
        return [json.dumps(_seen()).encode()]

    app = wsgi_app if app_returns == "stream" else listing
    stacked = IdentityWSGIMiddleware(OtelWSGI(app))
    before = _http_hops()
    for _ in range(2):
        result = stacked(_environ(IDENTITY_BAGGAGE), lambda *a: None)
        body = json.loads(b"".join(result))
        result.close()  # type: ignore[attr-defined]
        seen = body["during"] if app_returns == "stream" else body
        assert seen["user"] == "u-1"
        assert oi.get_identity() is None
        assert not trace.get_current_span().get_span_context().is_valid
        assert dict(otel_context.get_current()) == {}
    assert _grown(before, _http_hops()) == {names.OUTCOME_PRESENT: 2}
    server = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert len(server) == 2
    assert all(s.attributes and s.attributes.get("user.id") == "u-1" for s in server)


@pytest.mark.parametrize("baggage", [IDENTITY_BAGGAGE, None])
def test_stacked_wsgi_app_that_raises_counts_its_hop_once(spans: Any, baggage: str | None) -> None:
    oi.configure(inbound="trust")

    def failing(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        raise RuntimeError("boom")

    stacked = IdentityWSGIMiddleware(OtelWSGI(failing))
    before = _http_hops()
    with pytest.raises(RuntimeError):
        stacked(_environ(baggage), lambda *a: None)
    outcome = names.OUTCOME_PRESENT if baggage else names.OUTCOME_MISSING
    assert _grown(before, _http_hops()) == {outcome: 1}
    assert dict(otel_context.get_current()) == {}
    (server,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert len(_events(server, names.EVENT_MISSING)) == (0 if baggage else 1)
