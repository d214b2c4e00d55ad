"""Client libraries on real loopback servers: identity carried, and stripped outside the allow list.

The echo servers answer with the baggage and traceparent headers they received: one on
127.0.0.1 (inside an allow list of ``127.0.0.1``) and one on 127.0.0.2 (outside it).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import httpx
import pytest
import requests
import urllib3
from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import (
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from otel_identity_http import HttpClientIdentityInstrumentor

import otel_identity as oi
from otel_identity import _telemetry, names

from .conftest import Server, opentelemetry_client_instrumentor


def _requests(url: str) -> dict[str, Any]:
    return requests.get(url, timeout=10).json()  # type: ignore[no-any-return]


def _httpx_sync(url: str) -> dict[str, Any]:
    with httpx.Client() as client:
        return client.get(url, timeout=10).json()  # type: ignore[no-any-return]


def _httpx_async(url: str) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async with httpx.AsyncClient() as client:
            response = await client.get(url, timeout=10)
            return response.json()  # type: ignore[no-any-return]

    return _in_loop(run())


def _urllib3(url: str) -> dict[str, Any]:
    with urllib3.PoolManager() as pool:
        return json.loads(pool.request("GET", url, timeout=10).data)  # type: ignore[no-any-return]


def _aiohttp(url: str) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return json.loads(await response.text())  # type: ignore[no-any-return]

    return _in_loop(run())


def _in_loop(coro: Any) -> Any:
    # asyncio.run copies the current context into the loop's tasks, so the identity attached by
    # the test is what the client sees.
    return asyncio.run(coro)


CLIENTS: dict[str, Callable[[str], dict[str, Any]]] = {
    "requests": _requests,
    "httpx": _httpx_sync,
    "httpx-async": _httpx_async,
    "urllib3": _urllib3,
    "aiohttp": _aiohttp,
}


@pytest.fixture(params=["ours_only", "otel_first", "otel_last"])
def instrumented(request: pytest.FixtureRequest) -> Iterator[Callable[[str], bool]]:
    """Installs our client instrumentor, with OpenTelemetry's loaded before or after it."""
    mode = request.param
    installed: list[Any] = []

    def setup(client: str) -> bool:
        otel = opentelemetry_client_instrumentor(client) if mode != "ours_only" else None
        if otel is not None and mode == "otel_first":
            otel.instrument()
            installed.append(otel)
        ours = HttpClientIdentityInstrumentor()
        ours.instrument()
        installed.append(ours)
        if otel is not None and mode == "otel_last":
            otel.instrument()
            installed.append(otel)
        return otel is not None

    yield setup
    for instrumentor in reversed(installed):
        instrumentor.uninstrument()


def _members(header: str | None) -> dict[str, str]:
    if not header:
        return {}
    return dict(m.strip().split("=", 1) for m in header.split(",") if "=" in m)


def _call_under_identity(
    tracer: trace.Tracer, fetch: Callable[[str], dict[str, Any]], url: str
) -> dict[str, Any]:
    ctx = baggage.set_baggage("other", "kept", oi.set_identity(user_id="u-1", tenant_id="acme"))
    token = otel_context.attach(ctx)
    try:
        with tracer.start_as_current_span("caller"):
            return fetch(url)
    finally:
        otel_context.detach(token)


def _stripped(spans: Any) -> list[tuple[ReadableSpan, dict[str, Any]]]:
    return [
        (s, dict(e.attributes or {}))
        for s in spans.get_finished_spans()
        for e in s.events
        if e.name == names.EVENT_STRIPPED
    ]


@pytest.mark.parametrize("client", list(CLIENTS))
def test_identity_reaches_allowed_server_and_never_the_outside_one(
    echo_servers: tuple[Server, Server],
    instrumented: Callable[[str], bool],
    tracer: trace.Tracer,
    spans: Any,
    client: str,
) -> None:
    with_otel = instrumented(client)
    oi.configure(egress_allow="127.0.0.1")
    inside, outside = echo_servers
    fetch = CLIENTS[client]

    strips = _telemetry.stripped_counts().get("http.client", 0)
    got_inside = _members(_call_under_identity(tracer, fetch, inside.url())["baggage"])
    assert _telemetry.stripped_counts().get("http.client", 0) == strips
    assert got_inside.get("user.id") == "u-1"
    assert got_inside.get("tenant.id") == "acme"
    assert got_inside.get("other") == "kept"
    assert _stripped(spans) == []

    spans.clear()
    got_outside = _members(_call_under_identity(tracer, fetch, outside.url())["baggage"])
    assert _telemetry.stripped_counts().get("http.client", 0) == strips + 1  # the counter too
    assert "user.id" not in got_outside
    assert "tenant.id" not in got_outside
    assert got_outside.get("other") == "kept"
    (span, attributes), *rest = _stripped(spans)
    assert rest == []
    assert attributes[names.ATTR_SERVER_ADDRESS] == "127.0.0.2"
    assert attributes[names.ATTR_HOP] == "http.client"
    # The event is on the span that sent the request: OpenTelemetry's client span if any.
    assert span.kind is (SpanKind.CLIENT if with_otel else SpanKind.INTERNAL)


@pytest.mark.parametrize("client", list(CLIENTS))
def test_strip_all_baggage_sends_no_baggage_outside(
    echo_servers: tuple[Server, Server],
    instrumented: Callable[[str], bool],
    tracer: trace.Tracer,
    spans: Any,
    client: str,
) -> None:
    instrumented(client)
    oi.configure(egress_allow="127.0.0.1", egress_strip_all_baggage=True)
    inside, outside = echo_servers
    got = _call_under_identity(tracer, CLIENTS[client], outside.url())
    assert got["baggage"] is None
    assert got["traceparent"] is not None  # trace context still flows
    assert len(_stripped(spans)) == 1
    assert _members(_call_under_identity(tracer, CLIENTS[client], inside.url())["baggage"])


@pytest.mark.parametrize("client", list(CLIENTS))
def test_trace_context_is_injected_once_and_by_the_client_span(
    echo_servers: tuple[Server, Server],
    instrumented: Callable[[str], bool],
    tracer: trace.Tracer,
    spans: Any,
    client: str,
) -> None:
    with_otel = instrumented(client)
    inside, _ = echo_servers
    got = _call_under_identity(tracer, CLIENTS[client], inside.url())
    traceparent = got["traceparent"]
    assert traceparent is not None
    assert "," not in traceparent  # one value, not ours appended to OpenTelemetry's
    span_id = traceparent.split("-")[2]
    finished = spans.get_finished_spans()
    expected_kind = SpanKind.CLIENT if with_otel else SpanKind.INTERNAL
    senders = [s for s in finished if s.kind is expected_kind]
    assert span_id in {format(s.context.span_id, "016x") for s in senders}
    if with_otel:
        # urllib3 under requests must not add a second client span's context either.
        clients = [s for s in finished if s.kind is SpanKind.CLIENT]
        assert format(clients[0].context.span_id, "016x") == span_id or len(clients) > 1


@pytest.mark.parametrize("client", list(CLIENTS))
def test_uninstrument_stops_carrying_identity(
    echo_servers: tuple[Server, Server], tracer: trace.Tracer, client: str
) -> None:
    inside, _ = echo_servers
    ours = HttpClientIdentityInstrumentor()
    ours.instrument()
    ours.instrument()  # idempotent
    try:
        got = _call_under_identity(tracer, CLIENTS[client], inside.url())
        assert _members(got["baggage"]).get("user.id") == "u-1"
    finally:
        ours.uninstrument()
    got = _call_under_identity(tracer, CLIENTS[client], inside.url())
    assert got["baggage"] is None


def test_user_supplied_hostile_baggage_header_never_breaks_an_outgoing_request(
    echo_servers: tuple[Server, Server], tracer: trace.Tracer
) -> None:
    oi.configure(egress_allow="127.0.0.1")
    _, outside = echo_servers
    ours = HttpClientIdentityInstrumentor()
    ours.instrument()
    try:
        for header in ("user.id=%ZZ,,;;==", "=" * 9000, "user.id=" + "a" * 9000, "\u00e9=1"):
            value = header.encode("utf-8").decode("latin-1")
            response = requests.get(outside.url(), headers={"baggage": value}, timeout=10)
            assert response.status_code == 200
            assert "user.id=" not in (response.json()["baggage"] or "")
    finally:
        ours.uninstrument()


def test_signed_identity_crosses_http_even_when_otel_injected_the_unsigned_baggage(
    wsgi_server: Callable[..., Server], tracer: trace.Tracer
) -> None:
    """OpenTelemetry's requests instrumentation injects plain baggage; a receiver that verifies
    needs our signature, which the transport hook adds after it."""
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
    from otel_identity_http import IdentityWSGIMiddleware

    oi.configure(signing_keys={"k1": b"0123456789abcdef0123456789abcdef"}, inbound="verify")

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        identity = oi.get_identity()
        start_response("200 OK", [("Content-Type", "application/json")])
        body = {"user": identity.user_id, "verified": identity.verified} if identity else None
        return [json.dumps(body).encode()]

    handle = wsgi_server(IdentityWSGIMiddleware(OpenTelemetryMiddleware(app)))
    otel = RequestsInstrumentor()
    otel.instrument()
    ours = HttpClientIdentityInstrumentor()
    ours.instrument()
    try:
        with oi.use_identity(user_id="u-1", tenant_id="acme"):
            assert requests.get(handle.url(), timeout=10).json() == {
                "user": "u-1",
                "verified": True,
            }
        ours.uninstrument()
        with oi.use_identity(user_id="u-1", tenant_id="acme"):
            assert requests.get(handle.url(), timeout=10).json() is None  # unsigned: rejected
    finally:
        ours.uninstrument()
        otel.uninstrument()


@pytest.mark.parametrize("client", list(CLIENTS))
def test_egress_decisions_follow_a_settings_change_between_requests(
    echo_servers: tuple[Server, Server],
    instrumented: Callable[[str], bool],
    tracer: trace.Tracer,
    spans: Any,
    client: str,
) -> None:
    """Decisions are remembered per settings: new settings decide the very next request."""
    instrumented(client)
    inside, _ = echo_servers
    fetch = CLIENTS[client]
    oi.configure(egress_allow="127.0.0.1")
    assert _members(_call_under_identity(tracer, fetch, inside.url())["baggage"])["user.id"]
    oi.configure(egress_allow="10.0.0.0/8")
    got = _members(_call_under_identity(tracer, fetch, inside.url())["baggage"])
    assert "user.id" not in got
    assert got.get("other") == "kept"
    assert len(_stripped(spans)) == 1
    oi.configure(egress_allow="127.0.0.1", egress_strip_all_baggage=True)
    assert _call_under_identity(tracer, fetch, inside.url())["baggage"] is not None
    oi.configure(egress_allow="10.0.0.0/8", egress_strip_all_baggage=True)
    assert _call_under_identity(tracer, fetch, inside.url())["baggage"] is None


class _OtherPropagator(TextMapPropagator):
    """A propagator of a shape the client does not know: the general path handles its headers."""

    def extract(
        self, carrier: Any, context: Context | None = None, getter: Getter[Any] = default_getter
    ) -> Context:
        return context if context is not None else Context()

    def inject(
        self, carrier: Any, context: Context | None = None, setter: Setter[Any] = default_setter
    ) -> None:
        setter.set(carrier, "x-other", "1")

    @property
    def fields(self) -> set[str]:
        return {"x-other"}


@pytest.mark.parametrize("client", ["requests", "httpx", "urllib3"])
@pytest.mark.parametrize("shape", ["unknown_composite", "no_baggage"])
def test_a_global_propagator_change_is_seen_by_the_next_request(
    echo_servers: tuple[Server, Server],
    instrumented: Callable[[str], bool],
    tracer: trace.Tracer,
    spans: Any,
    client: str,
    shape: str,
) -> None:
    instrumented(client)
    oi.configure(egress_allow="127.0.0.1")
    inside, outside = echo_servers
    fetch = CLIENTS[client]
    assert "user.id" not in _members(_call_under_identity(tracer, fetch, outside.url())["baggage"])
    previous = propagate.get_global_textmap()
    if shape == "unknown_composite":
        propagate.set_global_textmap(
            CompositePropagator(
                [TraceContextTextMapPropagator(), W3CBaggagePropagator(), _OtherPropagator()]
            )
        )
    else:
        propagate.set_global_textmap(TraceContextTextMapPropagator())
    try:
        spans.clear()
        got_outside = _members(_call_under_identity(tracer, fetch, outside.url())["baggage"])
        got_inside = _members(_call_under_identity(tracer, fetch, inside.url())["baggage"])
    finally:
        propagate.set_global_textmap(previous)
    assert "user.id" not in got_outside
    if shape == "unknown_composite":
        assert got_outside.get("other") == "kept"
        assert len(_stripped(spans)) == 1
        assert got_inside.get("user.id") == "u-1"
    else:
        assert got_outside == got_inside == {}  # this propagator carries no baggage at all


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/x",
        "HTTP://Billing.SVC:80/a/b?c=d",
        "http://user:pw@Host.Example:80/p?q#f",
        "http://host?x=/y",
        "http://host#a/b",
        "http://host:80?x=1",
        "http://[::1]:8080/x",
        "http://[fe80::1%25eth0]/",
        "http://[bad/x",
        "http:/\t/evil.example/x?u=http://good.example/",
        "http://good.example\t.evil/x",
        " http://lead.example/",
        "https://xn--bcher-kva.example/",
        "mailto:someone@example.com",
        "/relative/path",
        "",
    ],
)
def test_a_url_is_judged_by_its_scheme_and_authority_alone(url: str) -> None:
    from otel_identity_http import _client

    from otel_identity import _egress

    allow = ("127.0.0.1", "*.svc", "<single-label>")
    destination = _client.url_destination(url)
    verdict, address = _egress.judge(url, allow)
    assert _egress.judge(destination, allow)[0] is verdict
    if _egress.hosts_of(url) is not None:  # (unreadable: each reports its own text)
        assert _egress.judge(destination, allow)[1] == address
    for more in ("/more", "/more?and=more", "?q=http://evil.example/", "#f@evil.example"):
        assert _client.url_destination(url + more) == destination or "://" not in url


def test_every_baggage_header_is_replaced_outside_egress_allow(tracer: trace.Tracer) -> None:
    """httpcore's headers may hold the name twice: identity goes from all of them."""
    from otel_identity_http import _client

    oi.configure(egress_allow="127.0.0.1")
    headers = [
        (b"Host", b"outside.example"),
        (b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        (b"baggage", b"other=kept"),
        (b"Baggage", b"user.id=u-1,tenant.id=acme"),
    ]
    with tracer.start_as_current_span("caller"):
        _client.apply_policy(headers, _client.httpcore_headers, "outside.example")
    assert [v for n, v in headers if n.lower() == b"baggage"] == [b"other=kept"]


def test_urllib3_shared_pool_headers_are_never_changed(
    echo_servers: tuple[Server, Server], tracer: trace.Tracer
) -> None:
    oi.configure(egress_allow="127.0.0.1")
    inside, outside = echo_servers
    shared = {"Baggage": "user.id=u-9,other=kept", "Accept": "*/*"}
    ours = HttpClientIdentityInstrumentor()
    ours.instrument()
    try:
        with urllib3.PoolManager(headers=shared) as pool:
            got_outside = json.loads(pool.request("GET", outside.url(), timeout=10).data)
            got_inside = json.loads(pool.request("GET", inside.url(), timeout=10).data)
    finally:
        ours.uninstrument()
    assert _members(got_outside["baggage"]) == {"other": "kept"}
    assert _members(got_inside["baggage"]).get("user.id") == "u-9"
    assert shared == {"Baggage": "user.id=u-9,other=kept", "Accept": "*/*"}
