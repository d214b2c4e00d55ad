"""What reaches the wire over HTTP: every client library, both load orders, redirects, spellings.

Echo servers on 127.0.0.1 (allowed: ``egress_allow="127.0.0.1"``) and 127.0.0.2 (outside)
answer with the raw ``baggage`` header that arrived; a redirector on 127.0.0.1 records what
it received and sends the client on to 127.0.0.2. Each client library runs with our client
instrumentor alone, or with OpenTelemetry's instrumentation for it loaded before or after
ours; the caller has identity alone, or identity and another member. The client span's events
must agree with the wire: ``identity.stripped`` exactly when identity did not leave.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import httpx
import pytest
import requests
import urllib3
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from otel_identity_http import HttpClientIdentityInstrumentor

import otel_identity as oi
from tests.egress_events import stripped, stripped_addresses

from .conftest import Server, echo_app, opentelemetry_client_instrumentor

ALLOWED, OUTSIDE = "127.0.0.1", "127.0.0.2"
ORDERS = ("ours-only", "ours-first", "theirs-first")
BAGGAGE = ("identity-alone", "with-other-member")


def _requests(url: str) -> Any:
    return requests.get(url, timeout=10).json()


def _httpx(url: str) -> Any:
    with httpx.Client(follow_redirects=True) as client:
        return client.get(url, timeout=10).json()


def _httpx_async(url: str) -> Any:
    async def run() -> Any:
        async with httpx.AsyncClient(follow_redirects=True) as client:
            return (await client.get(url, timeout=10)).json()

    return asyncio.run(run())


def _urllib3(url: str) -> Any:
    with urllib3.PoolManager() as pool:
        return json.loads(pool.request("GET", url, timeout=10).data)


def _aiohttp(url: str) -> Any:
    async def run() -> Any:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return json.loads(await response.text())

    return asyncio.run(run())


def _urllib(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


CLIENTS: dict[str, Callable[[str], Any]] = {
    "requests": _requests,
    "httpx": _httpx,
    "httpx-async": _httpx_async,
    "urllib3": _urllib3,
    "aiohttp": _aiohttp,
    "urllib": _urllib,
}


@pytest.fixture
def instrumented() -> Iterator[Callable[[str, str], None]]:
    installed: list[Any] = []

    def setup(client: str, order: str) -> None:
        ordered: list[Any] = {
            "ours-only": [HttpClientIdentityInstrumentor()],
            "ours-first": [
                HttpClientIdentityInstrumentor(),
                opentelemetry_client_instrumentor(client),
            ],
            "theirs-first": [
                opentelemetry_client_instrumentor(client),
                HttpClientIdentityInstrumentor(),
            ],
        }[order]
        for instrumentor in ordered:
            instrumentor.instrument()
            installed.append(instrumentor)

    yield setup
    for instrumentor in reversed(installed):
        instrumentor.uninstrument()


class _Redirector:
    """A WSGI app that records the baggage it received and redirects to ``location``."""

    def __init__(self) -> None:
        self.location = ""
        self.received: list[str | None] = []

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        self.received.append(environ.get("HTTP_BAGGAGE"))
        start_response("302 Found", [("Location", self.location), ("Content-Length", "0")])
        return [b""]


def _call(tracer: trace.Tracer, fetch: Callable[[str], Any], url: str, members: str) -> Any:
    ctx = oi.set_identity(user_id="u-1", tenant_id="acme")
    if members == "with-other-member":
        ctx = baggage.set_baggage("other", "kept", ctx)
    token = otel_context.attach(ctx)
    try:
        with tracer.start_as_current_span("caller"):
            return fetch(url)
    finally:
        otel_context.detach(token)


def _assert_kept_home(header: str | None, members: str) -> None:
    if members == "identity-alone":
        assert header is None  # the header goes, even with nothing left to write
    else:
        assert header == "other=kept"


def _assert_carries_identity(header: str | None, members: str) -> None:
    assert header is not None
    got = dict(member.split("=", 1) for member in header.split(","))
    expected = {"user.id": "u-1", "tenant.id": "acme"}
    if members == "with-other-member":
        expected["other"] = "kept"
    assert got == expected


@pytest.mark.parametrize("members", BAGGAGE)
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("client", list(CLIENTS))
def test_identity_reaches_the_wire_only_inside_the_allow_list_redirects_included(
    wsgi_server: Callable[..., Server],
    instrumented: Callable[[str, str], None],
    tracer: trace.Tracer,
    spans: InMemorySpanExporter,
    client: str,
    order: str,
    members: str,
) -> None:
    oi.configure(egress_allow=ALLOWED)
    instrumented(client, order)
    inside, outside = wsgi_server(echo_app, ALLOWED), wsgi_server(echo_app, OUTSIDE)
    redirector = _Redirector()
    redirector.location = outside.url("/")
    hop = wsgi_server(redirector, ALLOWED)
    fetch = CLIENTS[client]
    sender = SpanKind.INTERNAL if order == "ours-only" else SpanKind.CLIENT

    _assert_carries_identity(_call(tracer, fetch, inside.url(), members)["baggage"], members)
    assert stripped(spans) == []

    spans.clear()
    _assert_kept_home(_call(tracer, fetch, outside.url(), members)["baggage"], members)
    assert stripped(spans) == [(sender, OUTSIDE)]

    # A redirect hop is judged by its own destination: the first hop (allowed) carries
    # identity, the second (outside) does not, whoever copies the headers across.
    spans.clear()
    _assert_kept_home(_call(tracer, fetch, hop.url("/go"), members)["baggage"], members)
    _assert_carries_identity(redirector.received[0], members)
    assert stripped_addresses(spans) == [OUTSIDE]


SPELLINGS = ("2130706434", "0x7f000002", "0177.0.0.2", "127.2")


def _refuses(client: str, spelling: str) -> bool:
    """aiohttp refuses the non-canonical IPv4 forms it recognises (decimal ones; a hex one it
    sends to the resolver), httpx a dotted one with a leading zero: such a request never
    leaves (checked below), so there is no egress to judge."""
    if client == "aiohttp":
        return not spelling.startswith("0x")
    return client.startswith("httpx") and spelling == "0177.0.0.2"


@pytest.mark.parametrize(
    ("client", "spelling"),
    [(c, s) for c in CLIENTS for s in SPELLINGS if not _refuses(c, s)],
)
@pytest.mark.parametrize("order", ["ours-first", "theirs-first"])
def test_an_address_spelled_as_a_number_is_judged_as_the_address(
    wsgi_server: Callable[..., Server],
    instrumented: Callable[[str, str], None],
    tracer: trace.Tracer,
    spans: InMemorySpanExporter,
    client: str,
    order: str,
    spelling: str,
) -> None:
    """``2130706434`` is no single-label name: the resolver connects to 127.0.0.2."""
    oi.configure(egress_allow=f"{ALLOWED},<single-label>")
    instrumented(client, order)
    outside = wsgi_server(echo_app, OUTSIDE)
    got = _call(tracer, CLIENTS[client], f"http://{spelling}:{outside.port}/", "identity-alone")
    assert got["baggage"] is None
    assert stripped_addresses(spans) == [OUTSIDE]


@pytest.mark.parametrize(
    ("client", "spelling"),
    [(c, s) for c in CLIENTS for s in SPELLINGS if _refuses(c, s)],
)
def test_clients_left_out_above_still_refuse_the_spelling(
    wsgi_server: Callable[..., Server], tracer: trace.Tracer, client: str, spelling: str
) -> None:
    received: list[object] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        received.append(environ)
        return echo_app(environ, start_response)

    outside = wsgi_server(app, OUTSIDE)
    with pytest.raises(Exception):  # noqa: B017 - each library raises its own type
        _call(tracer, CLIENTS[client], f"http://{spelling}:{outside.port}/", "identity-alone")
    assert received == []


def _through_proxy(client: str, url: str, proxy: str) -> Any:
    if client == "requests":
        return requests.get(url, proxies={"http": proxy}, timeout=10).json()
    if client == "httpx":
        with httpx.Client(proxy=proxy) as http_client:
            return http_client.get(url, timeout=10).json()
    if client == "urllib3":
        with urllib3.ProxyManager(proxy) as pool:
            return json.loads(pool.request("GET", url, timeout=10).data)
    if client == "aiohttp":

        async def run() -> Any:
            async with aiohttp.ClientSession() as session:
                async with session.get(url, proxy=proxy) as response:
                    return json.loads(await response.text())

        return asyncio.run(run())
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
    with opener.open(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("client", ["requests", "httpx", "urllib3", "aiohttp", "urllib"])
def test_a_proxy_that_reads_the_request_is_judged_too(
    wsgi_server: Callable[..., Server],
    instrumented: Callable[[str, str], None],
    tracer: trace.Tracer,
    spans: InMemorySpanExporter,
    client: str,
    order: str,
) -> None:
    """A plain-HTTP request to an allowed host through a proxy outside the list: the proxy
    (here an echo server that answers itself) reads every header, so identity stays home."""
    oi.configure(egress_allow=ALLOWED)
    instrumented(client, order)
    proxy = wsgi_server(echo_app, OUTSIDE)
    target = f"http://{ALLOWED}:9/"  # never reached: the proxy answers
    got = _call(tracer, lambda url: _through_proxy(client, url, proxy.url("")), target, "")
    assert got["baggage"] is None
    assert stripped_addresses(spans) == [OUTSIDE]


def _with_header(client: str, url: str, header: str) -> Any:
    headers = {"baggage": header}
    if client == "requests":
        return requests.get(url, headers=headers, timeout=10).json()
    if client == "httpx":
        with httpx.Client() as http_client:
            return http_client.get(url, headers=headers, timeout=10).json()
    if client == "urllib3":
        with urllib3.PoolManager() as pool:
            return json.loads(pool.request("GET", url, headers=headers, timeout=10).data)
    if client == "aiohttp":

        async def run() -> Any:
            async with aiohttp.ClientSession() as session:
                async with session.get(url, headers=headers) as response:
                    return json.loads(await response.text())

        return asyncio.run(run())
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("client", ["requests", "httpx", "urllib3", "aiohttp", "urllib"])
def test_identity_the_application_wrote_into_a_header_is_filtered_too(
    wsgi_server: Callable[..., Server],
    instrumented: Callable[[str, str], None],
    tracer: trace.Tracer,
    spans: InMemorySpanExporter,
    client: str,
    order: str,
) -> None:
    """No identity in the context: what leaves is the application's own header, filtered."""
    oi.configure(egress_allow=ALLOWED)
    instrumented(client, order)
    outside = wsgi_server(echo_app, OUTSIDE)
    with tracer.start_as_current_span("caller"):
        got = _with_header(client, outside.url(), "user.id=forged,other=kept")
    assert got["baggage"] == "other=kept"
    assert stripped_addresses(spans) == [OUTSIDE]


def test_http_client_used_directly_carries_identity_only_inside(
    wsgi_server: Callable[..., Server],
    instrumented: Callable[[str, str], None],
    tracer: trace.Tracer,
    spans: InMemorySpanExporter,
) -> None:
    import http.client

    oi.configure(egress_allow=ALLOWED)
    instrumented("urllib", "ours-only")
    inside, outside = wsgi_server(echo_app, ALLOWED), wsgi_server(echo_app, OUTSIDE)

    def fetch(server: Server) -> Any:
        connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
        try:
            connection.request("GET", "/")
            return json.loads(connection.getresponse().read())
        finally:
            connection.close()

    got_inside = _call(tracer, lambda _url: fetch(inside), "", "identity-alone")
    _assert_carries_identity(got_inside["baggage"], "identity-alone")
    assert got_inside["traceparent"] is not None
    got_outside = _call(tracer, lambda _url: fetch(outside), "", "identity-alone")
    assert got_outside["baggage"] is None
    assert stripped(spans) == [(SpanKind.INTERNAL, OUTSIDE)]


def test_uninstrument_leaves_http_client_as_it_was(
    wsgi_server: Callable[..., Server], tracer: trace.Tracer
) -> None:
    import http.client

    original = http.client.HTTPConnection.request
    inside = wsgi_server(echo_app, ALLOWED)
    ours = HttpClientIdentityInstrumentor()
    ours.instrument()
    ours.instrument()  # idempotent
    try:
        assert http.client.HTTPConnection.request is not original
        got = _call(tracer, _urllib, inside.url(), "identity-alone")
        _assert_carries_identity(got["baggage"], "identity-alone")
    finally:
        ours.uninstrument()
    assert http.client.HTTPConnection.request is original
    assert _call(tracer, _urllib, inside.url(), "identity-alone")["baggage"] is None
