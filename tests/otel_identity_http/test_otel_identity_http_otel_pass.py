"""The WSGI and ASGI server hops decided inside OpenTelemetry's own pass (#13, point 7).

With OpenTelemetry's WSGI (or ASGI) middleware right inside ours and our baggage step in the global
textmap, that middleware's extract decides the hop. These tests prove it is the same hop as on
the general path (identity while the app runs and while its body is produced, ``current_user``
per hop, ``identity.missing`` on the server span, anonymous routes, rejection, hostile
headers, one count per request), that it needs no recording span (every case runs sampled and
dropped, with the same counts), and that the tap inside OpenTelemetry's middleware does the hop
itself should that middleware not extract.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from opentelemetry import baggage
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.instrumentation import utils as instrumentation_utils
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware as OtelASGI
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware as OtelWSGI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Sampler
from opentelemetry.trace import SpanKind
from otel_identity_http import IdentityASGIMiddleware, IdentityWSGIMiddleware

import otel_identity as oi
from otel_identity import instrumentation as oii
from otel_identity import names
from tests import hop_counts
from tests.baggage_step import SAMPLERS, our_baggage_step  # noqa: F401 - autouse

STASH_KEY = "otel_identity.admitted"  # what the general path leaves for the tap
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _seen() -> dict[str, Any]:
    identity = oi.get_identity()
    marker = oii.announced(names.HOP_HTTP_SERVER)
    return {
        "user": identity.user_id if identity else None,
        "tenant": identity.tenant_id if identity else None,
        "members": dict(baggage.get_all()),
        "in_otel_pass": marker is not None and marker.decided(otel_context.get_current()),
    }


users: list[object] = []


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
    """Streams its answer: the identity is read again while the body is produced."""
    before = _seen()
    users.append(oi.get_current_user())
    start_response("200 OK", [("Content-Type", "application/json")])

    def body() -> Iterator[bytes]:
        yield json.dumps({"before": before, "during": _seen()}).encode()

    return body()


def lazy_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
    """Starts its response only when its body is produced (a generator app), after the
    announcement ended: whether the hop was ours is read from the environ (the general path
    leaves its stash there for the tap)."""
    before = _seen()
    before["in_otel_pass"] = STASH_KEY not in environ
    start_response("200 OK", [("Content-Type", "application/json")])
    yield json.dumps({"before": before, "during": _seen()}).encode()


def _provider(sampler: Sampler) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(oi.IdentitySpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _stacked(
    sampler: Sampler = ALWAYS_ON, wsgi: Any = app, order: str = "identity_outer"
) -> tuple[Any, InMemorySpanExporter]:
    provider, exporter = _provider(sampler)
    if order == "identity_outer":
        return IdentityWSGIMiddleware(OtelWSGI(wsgi, tracer_provider=provider)), exporter
    return OtelWSGI(IdentityWSGIMiddleware(wsgi), tracer_provider=provider), exporter


def _request(stacked: Any, baggage_header: str | None, path: str = "/orders") -> dict[str, Any]:
    environ: dict[str, Any] = {"HTTP_TRACEPARENT": TRACEPARENT, "PATH_INFO": path}
    if baggage_header is not None:
        environ["HTTP_BAGGAGE"] = baggage_header
    setup_testing_defaults(environ)
    result = stacked(environ, lambda *a: None)
    try:
        return json.loads(b"".join(result))  # type: ignore[no-any-return]
    finally:
        result.close()
        assert dict(otel_context.get_current()) == {}  # nothing left behind in the thread


def _totals() -> hop_counts.Counts:
    return hop_counts.totals(names.HOP_HTTP_SERVER)


def _delta(before: hop_counts.Counts) -> hop_counts.Counts:
    return hop_counts.delta(before, names.HOP_HTTP_SERVER)


_server_events = hop_counts.server_events


@SAMPLERS
@pytest.mark.parametrize("wsgi", [app, lazy_app], ids=["eager", "lazy"])
def test_the_hop_is_decided_in_opentelemetrys_extract(sampler: Sampler, wsgi: Any) -> None:
    oi.configure(inbound="trust")
    stacked, exporter = _stacked(sampler, wsgi)
    before = _totals()
    for _ in range(2):
        body = _request(stacked, "user.id=u-1,tenant.id=acme")
        assert body["before"]["user"] == "u-1" and body["before"]["in_otel_pass"] is True
        assert body["during"]["user"] == "u-1"
    # Counted once per request whether or not the server span records.
    assert _delta(before) == {(names.OUTCOME_PRESENT,): 2}
    server = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert len(server) == (2 if sampler is ALWAYS_ON else 0)
    assert all(s.attributes and s.attributes.get(names.USER_ID) == "u-1" for s in server)


def test_current_user_is_resolved_afresh_on_every_hop() -> None:
    class User:
        def __init__(self, user_id: str | None) -> None:
            self.user_id = user_id

    oi.configure(inbound="trust")
    oi.set_user_resolver(lambda identity: User(identity.user_id))
    stacked, _ = _stacked()
    users.clear()
    _request(stacked, "user.id=u-1")
    _request(stacked, "user.id=u-1")
    assert [getattr(u, "user_id", None) for u in users] == ["u-1", "u-1"]
    assert users[0] is not users[1]


@SAMPLERS
@pytest.mark.parametrize("wsgi", [app, lazy_app], ids=["eager", "lazy"])
def test_missing_identity_lands_once_on_the_server_span_when_the_response_starts(
    sampler: Sampler, wsgi: Any
) -> None:
    stacked, exporter = _stacked(sampler, wsgi)
    before = _totals()
    body = _request(stacked, None)
    assert body["before"]["user"] is None and body["before"]["in_otel_pass"] is True
    assert _server_events(exporter) == ([names.EVENT_MISSING] if sampler is ALWAYS_ON else [])
    assert _delta(before) == {(names.OUTCOME_MISSING,): 1}


@SAMPLERS
def test_anonymous_routes_are_decided_in_the_same_pass(sampler: Sampler) -> None:
    oi.configure(anonymous_routes="/healthz")
    stacked, exporter = _stacked(sampler)
    before = _totals()
    assert _request(stacked, None, path="/healthz")["before"]["in_otel_pass"] is True
    assert _server_events(exporter) == []
    assert _delta(before) == {(names.OUTCOME_ANONYMOUS,): 1}


@SAMPLERS
def test_unsigned_identity_under_verify_is_rejected_in_the_same_pass(sampler: Sampler) -> None:
    oi.configure(inbound="verify", signing_keys="k1:" + "a" * 44)
    stacked, exporter = _stacked(sampler)
    before = _totals()
    body = _request(stacked, "user.id=root,tenant.id=acme,other=kept")
    assert body["before"] == {
        "user": None,
        "tenant": None,
        "members": {"other": "kept"},
        "in_otel_pass": True,
    }
    if sampler is ALWAYS_ON:
        assert _server_events(exporter) == [names.EVENT_REJECTED, names.EVENT_MISSING]
    assert _delta(before) == {(names.OUTCOME_REJECTED, names.REASON_UNTRUSTED): 1}


@SAMPLERS
def test_an_app_that_raises_counts_its_hop_once(sampler: Sampler) -> None:
    def failing(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        raise RuntimeError("boom")

    provider, _ = _provider(sampler)
    stacked = IdentityWSGIMiddleware(OtelWSGI(failing, tracer_provider=provider))
    before = _totals()
    environ: dict[str, Any] = {"HTTP_BAGGAGE": "user.id=u-1"}
    setup_testing_defaults(environ)
    with pytest.raises(RuntimeError):
        stacked(environ, lambda *a: None)
    assert _delta(before) == {(names.OUTCOME_PRESENT,): 1}
    assert dict(otel_context.get_current()) == {}


@SAMPLERS
def test_a_body_that_fails_before_the_response_starts_counts_its_hop_once(
    sampler: Sampler,
) -> None:
    def failing(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        raise RuntimeError("boom")
        yield b""  # a generator app: it fails when its body is produced

    provider, _ = _provider(sampler)
    stacked = IdentityWSGIMiddleware(OtelWSGI(failing, tracer_provider=provider))
    before = _totals()
    environ: dict[str, Any] = {"HTTP_BAGGAGE": "user.id=u-1"}
    setup_testing_defaults(environ)
    result = stacked(environ, lambda *a: None)
    with pytest.raises(RuntimeError):
        b"".join(result)
    result.close()
    assert _delta(before) == {(names.OUTCOME_PRESENT,): 1}
    assert dict(otel_context.get_current()) == {}


def test_with_a_span_current_the_general_path_does_the_hop(tracer: Any) -> None:
    # OpenTelemetry's middleware extracts nothing under a current span: ours does the hop.
    oi.configure(inbound="trust")
    stacked, _ = _stacked()
    before = _totals()
    with tracer.start_as_current_span("outer"):
        body = _request_keeping_context(stacked, "user.id=u-1")
    assert body["before"]["user"] == "u-1" and body["before"]["in_otel_pass"] is False
    assert _delta(before) == {(names.OUTCOME_PRESENT,): 1}


def _request_keeping_context(stacked: Any, baggage_header: str) -> dict[str, Any]:
    environ: dict[str, Any] = {"HTTP_TRACEPARENT": TRACEPARENT, "HTTP_BAGGAGE": baggage_header}
    setup_testing_defaults(environ)
    result = stacked(environ, lambda *a: None)
    try:
        return json.loads(b"".join(result))  # type: ignore[no-any-return]
    finally:
        result.close()


@SAMPLERS
def test_where_opentelemetrys_middleware_does_not_extract_the_tap_decides_the_hop(
    sampler: Sampler, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Should OpenTelemetry's middleware ever start its span without extracting, the
    # announcement is still open inside it: our tap there decides the hop, once.
    monkeypatch.setattr(instrumentation_utils, "extract", lambda *a, **k: Context())
    oi.configure(inbound="trust")
    stacked, exporter = _stacked(sampler)
    before = _totals()
    body = _request(stacked, "user.id=u-1,tenant.id=acme")
    assert body["before"]["user"] == "u-1" and body["during"]["user"] == "u-1"
    assert _delta(before) == {(names.OUTCOME_PRESENT,): 1}
    server = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert len(server) == (1 if sampler is ALWAYS_ON else 0)
    assert all(s.attributes and s.attributes.get(names.USER_ID) == "u-1" for s in server)


@SAMPLERS
def test_where_opentelemetrys_middleware_does_not_extract_missing_still_lands(
    sampler: Sampler, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(instrumentation_utils, "extract", lambda *a, **k: Context())
    stacked, exporter = _stacked(sampler)
    before = _totals()
    assert _request(stacked, None)["before"]["user"] is None
    assert _server_events(exporter) == ([names.EVENT_MISSING] if sampler is ALWAYS_ON else [])
    assert _delta(before) == {(names.OUTCOME_MISSING,): 1}


# -- either order of the middleware, hostile headers: the same hop --------------------------

HOSTILE = {
    "look-alike keys": "%75ser.id=mallory,user.id%20=eve,tenant.id=acme",
    "control characters": "user.id=u-1,tenant.id=acme%0D,other=kept",
    "ambiguous duplicate": "user.id=a,user.id=b,other=kept",
    "refused escape": "user.id=u-1,tenant.id=%ZZ,other=kept",
    "oversize": "user.id=" + "x" * 9000 + ",tenant.id=acme",
    "too many members": ",".join(f"k{i}=v" for i in range(80)) + ",user.id=u-1",
    "plain": "user.id=u-1,tenant.id=acme",
}


@SAMPLERS
@pytest.mark.parametrize("header", HOSTILE.values(), ids=list(HOSTILE))
def test_in_either_order_the_hop_is_decided_alike(sampler: Sampler, header: str) -> None:
    oi.configure(inbound="trust")
    seen = {}
    for order in ("identity_outer", "identity_inner"):
        stacked, _ = _stacked(sampler, order=order)
        before = _totals()
        before_seen = _request(stacked, header)["before"]
        in_pass = before_seen.pop("in_otel_pass")
        assert in_pass is (order == "identity_outer")
        seen[order] = (before_seen, _delta(before))
    assert seen["identity_outer"] == seen["identity_inner"]


# -- ASGI: OpenTelemetry's ASGI middleware right inside ours ---------------------------------

HOP = names.HOP_HTTP_SERVER


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with what the endpoint saw (``in_otel_pass`` read while the hop runs)."""
    seen = _seen()
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": json.dumps(seen)})
        await send({"type": "websocket.close"})
        return
    start = {"type": "http.response.start", "status": 200, "headers": []}
    await send(start)
    await send({"type": "http.response.body", "body": json.dumps(seen).encode()})


def _asgi_stacked(
    sampler: Sampler = ALWAYS_ON, order: str = "identity_outer", **otel: Any
) -> tuple[Any, InMemorySpanExporter]:
    provider, exporter = _provider(sampler)
    if order == "identity_outer":
        return IdentityASGIMiddleware(OtelASGI(asgi_app, tracer_provider=provider, **otel)), (
            exporter
        )
    return OtelASGI(IdentityASGIMiddleware(asgi_app), tracer_provider=provider, **otel), exporter


def _scope(baggage_header: bytes | None, path: str, kind: str) -> dict[str, Any]:
    headers = [(b"host", b"service"), (b"traceparent", TRACEPARENT.encode())]
    if baggage_header is not None:
        headers.append((b"baggage", baggage_header))
    return {
        "type": kind,
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http" if kind == "http" else "ws",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }


def _asgi_request(
    stacked: Any, baggage_header: bytes | None, path: str = "/orders", kind: str = "http"
) -> dict[str, Any]:
    sent: list[dict[str, Any]] = []
    incoming = [{"type": "http.request", "body": b"", "more_body": False}]
    if kind == "websocket":
        incoming = [{"type": "websocket.connect"}, {"type": "websocket.disconnect"}]

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def request() -> None:
        await stacked(_scope(baggage_header, path, kind), receive, send)
        assert dict(otel_context.get_current()) == {}  # nothing left behind in the task
        assert oii.announced(HOP) is None  # the announcement ended with the call

    asyncio.run(request())
    body = [m.get("body") or m.get("text") for m in sent if m["type"] in _BODIES]
    return json.loads(b"".join(b if isinstance(b, bytes) else b.encode() for b in body))  # type: ignore[no-any-return]


_BODIES = ("http.response.body", "websocket.send")


@SAMPLERS
@pytest.mark.parametrize("kind", ["http", "websocket"])
def test_asgi_the_hop_is_decided_in_opentelemetrys_extract(sampler: Sampler, kind: str) -> None:
    oi.configure(inbound="trust")
    stacked, exporter = _asgi_stacked(sampler)
    before = _totals()
    for _ in range(2):
        seen = _asgi_request(stacked, b"user.id=u-1,tenant.id=acme", kind=kind)
        assert (seen["user"], seen["tenant"], seen["in_otel_pass"]) == ("u-1", "acme", True)
    assert _delta(before) == {(names.OUTCOME_PRESENT,): 2}
    server = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert len(server) == (2 if sampler is ALWAYS_ON else 0)
    assert all(s.attributes and s.attributes.get(names.USER_ID) == "u-1" for s in server)


@SAMPLERS
def test_asgi_missing_identity_lands_once_on_the_server_span(sampler: Sampler) -> None:
    stacked, exporter = _asgi_stacked(sampler)
    before = _totals()
    seen = _asgi_request(stacked, None)
    assert (seen["user"], seen["in_otel_pass"]) == (None, True)
    assert _server_events(exporter) == ([names.EVENT_MISSING] if sampler is ALWAYS_ON else [])
    assert _delta(before) == {(names.OUTCOME_MISSING,): 1}


@SAMPLERS
def test_asgi_anonymous_routes_are_decided_in_the_same_pass(sampler: Sampler) -> None:
    oi.configure(anonymous_routes="/healthz")
    stacked, exporter = _asgi_stacked(sampler)
    before = _totals()
    assert _asgi_request(stacked, None, path="/healthz")["in_otel_pass"] is True
    assert _server_events(exporter) == []
    assert _delta(before) == {(names.OUTCOME_ANONYMOUS,): 1}


@SAMPLERS
def test_asgi_unsigned_identity_under_verify_is_rejected_in_the_same_pass(
    sampler: Sampler,
) -> None:
    oi.configure(inbound="verify", signing_keys="k1:" + "a" * 44)
    stacked, exporter = _asgi_stacked(sampler)
    before = _totals()
    seen = _asgi_request(stacked, b"user.id=root,other=kept")
    assert (seen["user"], seen["members"], seen["in_otel_pass"]) == (None, {"other": "kept"}, True)
    if sampler is ALWAYS_ON:
        assert _server_events(exporter) == [names.EVENT_REJECTED, names.EVENT_MISSING]
    assert _delta(before) == {(names.OUTCOME_REJECTED, names.REASON_UNTRUSTED): 1}


@SAMPLERS
def test_asgi_an_app_that_raises_counts_its_hop_once(sampler: Sampler) -> None:
    async def failing(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    provider, _ = _provider(sampler)
    stacked = IdentityASGIMiddleware(OtelASGI(failing, tracer_provider=provider))
    before = _totals()

    async def request() -> None:
        with pytest.raises(RuntimeError):
            await stacked(_scope(b"user.id=u-1", "/orders", "http"), None, None)
        assert oii.announced(HOP) is None and dict(otel_context.get_current()) == {}

    asyncio.run(request())
    assert _delta(before) == {(names.OUTCOME_PRESENT,): 1}


def test_asgi_with_a_span_current_the_general_path_does_the_hop(tracer: Any) -> None:
    oi.configure(inbound="trust")
    stacked, _ = _asgi_stacked()
    before = _totals()

    async def request() -> dict[str, Any]:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        with tracer.start_as_current_span("outer"):
            await stacked(_scope(b"user.id=u-1", "/orders", "http"), _no_body, send)
        return json.loads(sent[-1]["body"])  # type: ignore[no-any-return]

    seen = asyncio.run(request())
    assert (seen["user"], seen["in_otel_pass"]) == ("u-1", False)
    assert _delta(before) == {(names.OUTCOME_PRESENT,): 1}


async def _no_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


@SAMPLERS
def test_asgi_on_an_url_opentelemetry_excludes_the_tap_decides_the_hop(sampler: Sampler) -> None:
    # OpenTelemetry's middleware neither extracts nor starts a span on an excluded URL: the
    # announcement is still open inside it, and our tap there decides the hop, once.
    oi.configure(inbound="trust")
    stacked, exporter = _asgi_stacked(sampler, excluded_urls="healthz")
    before = _totals()
    seen = _asgi_request(stacked, b"user.id=u-1,tenant.id=acme", path="/healthz")
    assert (seen["user"], seen["in_otel_pass"]) == ("u-1", True)  # (decided by the tap)
    assert _delta(before) == {(names.OUTCOME_PRESENT,): 1}
    assert [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER] == []


ASGI_HOSTILE = {
    **{name: header.encode() for name, header in HOSTILE.items()},
    # OpenTelemetry's ASGI getter decodes a header that is not UTF-8 with backslash escapes:
    # read that way, a look-alike key becomes user.id. Ours reads the bytes as they are.
    "escaped key, not UTF-8": b"\\x75ser.id=mallory,k=\xff",
    "escaped value, not UTF-8": b"user.id=ro\\x6ft,k=\xff",
    "UTF-8 value": "user.id=caf\u00e9,tenant.id=acme".encode(),
}


@SAMPLERS
@pytest.mark.parametrize("header", ASGI_HOSTILE.values(), ids=list(ASGI_HOSTILE))
def test_asgi_in_either_order_the_hop_is_decided_alike(sampler: Sampler, header: bytes) -> None:
    oi.configure(inbound="trust")
    seen = {}
    for order in ("identity_outer", "identity_inner"):
        stacked, _ = _asgi_stacked(sampler, order=order)
        before = _totals()
        found = _asgi_request(stacked, header)
        assert found.pop("in_otel_pass") is (order == "identity_outer")
        seen[order] = (found, _delta(before))
    assert seen["identity_outer"] == seen["identity_inner"]
    if b"\\x" in header:
        assert seen["identity_outer"][0]["user"] is None


def _raw_get(port: int, baggage_header: bytes) -> dict[str, Any]:
    """A GET with ``baggage_header``'s bytes exactly as given, over a real socket."""
    import socket

    request = b"GET /orders HTTP/1.1\r\nHost: service\r\nConnection: close\r\nbaggage: "
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request + baggage_header + b"\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    if b"chunked" in head.lower():  # one chunk: size line, data, then the last chunk
        body = body.split(b"\r\n", 2)[1]
    return json.loads(body)  # type: ignore[no-any-return]


_STACKS: dict[str, Callable[[TracerProvider], Any]] = {
    "opentelemetry alone": lambda provider: OtelASGI(asgi_app, tracer_provider=provider),
    "identity outer": lambda provider: IdentityASGIMiddleware(
        OtelASGI(asgi_app, tracer_provider=provider)
    ),
    "identity inner": lambda provider: OtelASGI(
        IdentityASGIMiddleware(asgi_app), tracer_provider=provider
    ),
}


@pytest.mark.parametrize("stack", _STACKS.values(), ids=list(_STACKS))
@pytest.mark.parametrize(
    "header",
    [b"\\x75ser.id=mallory,k=\xff", b"user.id=ro\\x6ft,k=\xff", b"user.id=mallory\xff"],
    ids=["escaped key", "escaped value", "stray byte"],
)
def test_identity_smuggled_past_utf_8_reaches_no_app_through_a_real_server(
    asgi_server: Callable[..., Any], stack: Callable[[TracerProvider], Any], header: bytes
) -> None:
    """OpenTelemetry's ASGI getter reads bytes that are not UTF-8 with backslash escapes,
    so ``\\x75ser.id`` (which a gateway filtering ``user.id`` lets through) would become
    ``user.id``: with our baggage step in the textmap no app sees that identity, even behind
    OpenTelemetry's middleware alone."""
    oi.configure(inbound="trust")
    provider, _ = _provider(ALWAYS_ON)
    server = asgi_server(stack(provider))
    seen = _raw_get(server.port, header)
    assert seen["user"] is None
    assert "user.id" not in seen["members"]
    # A clean header through the same stack still carries identity.
    assert _raw_get(server.port, b"user.id=u-1,tenant.id=acme")["user"] == "u-1"


@pytest.mark.parametrize(
    "value",
    [None, "", "user.id=u-1", "user.id=a,tenant.id=t", " user.id=a ; p=1 ", b"user.id=bytes", 7],
    ids=["absent", "empty", "one", "two", "properties", "bytes", "not-text"],
)
def test_the_wsgi_announcement_reads_the_header_the_general_path_reads(value: Any) -> None:
    """WSGI hands the announcement the baggage header as the environ holds it: the same text
    the general path's getter reads (several lines joined, None for none)."""
    from otel_identity_http import _wsgi
    from otel_identity_http._shapes import environ_getter

    from otel_identity import _propagation

    environ: dict[str, Any] = {} if value is None else {"HTTP_BAGGAGE": value}
    header, getter = _wsgi._WSGI.announced(environ)
    assert getter is None
    assert (header or None) == _propagation.joined(environ_getter.get(environ, "baggage"))
