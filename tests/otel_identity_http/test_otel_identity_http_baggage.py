"""Hostile and unusual baggage headers through a real WSGI server, with OpenTelemetry's WSGI
middleware in both orders around ours, with OpenTelemetry's baggage step in the global
textmap and with ours in its place (what ``IdentityInstrumentor`` does).

Requests are written to the socket by hand: a client library would refuse to send most of
these headers, an attacker's client does not.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import baggage
from opentelemetry.context import Context
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware as OtelWSGI
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind
from otel_identity_http import IdentityWSGIMiddleware

import otel_identity as oi
from otel_identity import _baggage_propagator, names
from tests.core.test_baggage_fuzz import Records, assert_bounded
from tests.hostile_baggage import IDENTITY_KEYS, hostile_headers

from .conftest import Server
from .test_otel_identity_http_server import wait_for_spans

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
ORDERS = ["identity_outer", "identity_inner"]
TEXTMAPS = ["opentelemetry", "ours"]


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    identity = oi.get_identity()
    body = {
        "user": identity and identity.user_id,
        "tenant": identity and identity.tenant_id,
        "verified": identity and identity.verified,
        "baggage": dict(baggage.get_all()),
    }
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]


def stack(order: str) -> Any:
    if order == "identity_outer":
        return IdentityWSGIMiddleware(OtelWSGI(app))
    return OtelWSGI(IdentityWSGIMiddleware(app))


def send(server: Server, *baggage_values: bytes | str) -> tuple[int, dict[str, Any]]:
    """A GET with these ``baggage`` header lines, written to the socket as they are."""
    lines = [b"GET /orders HTTP/1.1", b"Host: service", b"traceparent: " + TRACEPARENT.encode()]
    for value in baggage_values:
        raw = value.encode("utf-8") if isinstance(value, str) else value
        lines.append(b"baggage: " + raw)
    request = b"\r\n".join([*lines, b"Connection: close", b"", b""])
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, (json.loads(body) if status == 200 else {})


@pytest.fixture(params=TEXTMAPS)
def textmap(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "ours":
        assert _baggage_propagator.install()
    try:
        yield request.param
    finally:
        _baggage_propagator.uninstall()


@pytest.fixture(params=ORDERS)
def server(
    request: pytest.FixtureRequest, textmap: str, wsgi_server: Callable[..., Server]
) -> Server:
    return wsgi_server(stack(request.param))


def server_span(spans: Any) -> ReadableSpan:
    finished = wait_for_spans(spans, lambda f: any(s.kind is SpanKind.SERVER for s in f))
    return next(s for s in finished if s.kind is SpanKind.SERVER)


def reject_reasons(spans: Any) -> list[object]:
    span = server_span(spans)
    return [
        (e.attributes or {}).get(names.ATTR_REJECT_REASON)
        for e in span.events
        if e.name == names.EVENT_REJECTED
    ]


@pytest.mark.parametrize(
    "look_alike",
    [
        "%75ser.id=mallory",
        "user.id%20=mallory",
        "user%2Eid=mallory",
        "USER.ID=mallory",
        " user.id\x00=mallory",
        "us\u0435r.id=mallory",
        "%75ser.id=mallory,user.id%20=eve,%75ser%2Eid=trudy",
    ],
)
def test_look_alike_keys_never_yield_identity(server: Server, look_alike: str) -> None:
    oi.configure(inbound="trust")
    status, seen = send(server, look_alike + ",tenant.id=acme")
    assert status == 200
    assert seen["user"] is None
    assert "user.id" not in seen["baggage"]
    # A header with text outside ASCII is garbled: none of its identity members is admitted.
    assert seen["tenant"] == (None if not look_alike.isascii() else "acme")


@pytest.mark.parametrize(
    "value", ["acme%0D", "acme%0A", "ac%00me", "%1B[2Jacme", "acme%7F", "acme%C2%85", "ac\x1bme"]
)
def test_control_characters_reject_the_hop_as_malformed(
    server: Server, spans: Any, value: str
) -> None:
    oi.configure(inbound="trust")
    status, seen = send(server, f"user.id=u-1,tenant.id={value},other=kept")
    assert status == 200
    assert seen["user"] is None and seen["tenant"] is None
    assert seen["baggage"] == {"other": "kept"}
    assert reject_reasons(spans) == [names.REASON_MALFORMED]


def test_duplicates_with_different_values_reject_the_hop_as_malformed(
    server: Server, spans: Any
) -> None:
    oi.configure(inbound="trust")
    status, seen = send(server, "user.id=u-1,tenant.id=acme", "user.id=admin")
    assert status == 200
    assert seen["user"] is None and not set(seen["baggage"]) & set(IDENTITY_KEYS)
    assert reject_reasons(spans) == [names.REASON_MALFORMED]


def test_equal_duplicates_are_one_member(server: Server) -> None:
    oi.configure(inbound="trust")
    status, seen = send(server, "user.id=u-1,tenant.id=acme", "user.id=u-1;p=1")
    assert (status, seen["user"], seen["tenant"]) == (200, "u-1", "acme")


@pytest.mark.parametrize("encoding", ["percent-encoded", "raw UTF-8 in properties"])
def test_a_multibyte_header_over_8192_bytes_is_limited_in_bytes(
    server: Server, encoding: str
) -> None:
    oi.configure(inbound="trust")
    if encoding == "percent-encoded":  # 2,703 bytes each, 300 characters once decoded
        filler = [f"f{i}=" + "%E2%82%AC" * 300 for i in range(4)]
    else:  # 3,007 bytes each, 1,007 characters as text
        filler = [f"f{i}=v;p=" + "\u20ac" * 1000 for i in range(3)]
    header = ",".join([*filler, "user.id=u-1", "tenant.id=acme"])
    assert len(header.encode()) > 8192
    if encoding != "percent-encoded":
        assert len(header) < 8192  # under the limit in characters, over it in bytes
    status, seen = send(server, header)
    # Limits count bytes, either way. Raw UTF-8 is no W3C header (a sender percent-encodes
    # it): such a header is garbled, and its identity members are not admitted.
    expected = ("u-1", "acme") if encoding == "percent-encoded" else (None, None)
    assert (status, seen["user"], seen["tenant"]) == (200, *expected)
    assert 0 < len([k for k in seen["baggage"] if k.startswith("f")]) < len(filler)


def test_a_signature_with_a_property_reaches_the_verifier_without_it(
    server: Server, spans: Any
) -> None:
    key = base64.b64encode(b"k" * 32).decode()
    oi.configure(signing_keys=f"k1:{key}", inbound="verify")
    carrier: dict[str, str] = {}
    oi.inject(carrier, context=oi.set_identity(user_id="ada lovelace", context=Context()))
    members = carrier["baggage"].split(",")
    with_property = [m + ";x=1" if m.startswith("identity.sig=") else m for m in members]
    assert with_property != members
    status, seen = send(server, " , ".join(with_property))
    assert status == 200
    assert (seen["user"], seen["verified"]) == ("ada lovelace", True)
    assert reject_reasons(spans) == []


FUZZ = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def test_5000_hostile_headers_through_a_real_wsgi_server(
    wsgi_server: Callable[..., Server],
) -> None:
    """Ours in place of OpenTelemetry's baggage step (the zero-code setup), both orders."""
    oi.configure(inbound="trust")
    records = Records()
    logging.getLogger().addHandler(records)
    assert _baggage_propagator.install()
    sent = [0]
    try:
        servers = [wsgi_server(stack(order)) for order in ORDERS]

        @FUZZ
        @given(st.lists(hostile_headers, min_size=50, max_size=50))
        def run(headers: list[str]) -> None:
            for i, header in enumerate(headers):
                status, seen = send(servers[i % 2], header)
                assert status == 200, header
                assert seen["user"] is None and seen["tenant"] is None, header
                assert not set(seen["baggage"]) & set(IDENTITY_KEYS), header
                sent[0] += 1

        run()
    finally:
        _baggage_propagator.uninstall()
        logging.getLogger().removeHandler(records)
    assert sent[0] >= 5000
    assert_bounded(records.records)
