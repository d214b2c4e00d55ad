"""The global textmap replaced after otel-identity installed its baggage step: identity fails
closed, through a real server, and says so once.

Someone (a late ``set_global_textmap``, a framework's own setup) puts OpenTelemetry's baggage
propagator back. Its parser percent-decodes keys (``%75ser.id`` reads as ``user.id``) and its
encoder writes a space as ``+``: neither may carry identity any more.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from opentelemetry import propagate
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from otel_identity_http import HttpClientIdentityInstrumentor

import otel_identity as oi
from otel_identity import _baggage_propagator
from otel_identity.instrumentation import baggage_step_displaced

from .conftest import Server, echo_app


def _opentelemetrys() -> CompositePropagator:
    return CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])


@pytest.fixture
def displaced() -> Iterator[None]:
    """Ours installed by the instrumentor, then OpenTelemetry's put back over it."""
    original = propagate.get_global_textmap()
    propagate.set_global_textmap(_opentelemetrys())
    instrumentor = oi.IdentityInstrumentor()
    instrumentor.instrument()
    assert _baggage_propagator.baggage_step_status() == "ours"
    propagate.set_global_textmap(_opentelemetrys())  # someone else's, set later
    try:
        yield
    finally:
        instrumentor.uninstrument()
        propagate.set_global_textmap(original)


def test_while_ours_is_in_place_nothing_is_displaced() -> None:
    original = propagate.get_global_textmap()
    instrumentor = oi.IdentityInstrumentor()
    try:
        instrumentor.instrument()
        assert not baggage_step_displaced()
    finally:
        instrumentor.uninstrument()
        propagate.set_global_textmap(original)


@pytest.mark.usefixtures("displaced")
def test_identity_parsed_by_another_baggage_step_is_not_admitted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="otel_identity")
    # A look-alike key that OpenTelemetry's parser decodes into an identity key.
    ctx = propagate.extract({"baggage": "%75ser.id=mallory,tenant.id=acme"})
    assert oi.get_identity(ctx) is None
    assert oi.get_identity(propagate.extract({"baggage": "user.id=u-1"})) is None
    assert baggage_step_displaced()
    lines = [r for r in caplog.records if "textmap was replaced" in r.getMessage()]
    assert len(lines) == 1


@pytest.mark.usefixtures("displaced")
@pytest.mark.parametrize("ordering", ["ours first", "theirs first"])
def test_identity_does_not_leave_through_a_displaced_baggage_step(
    wsgi_server: Callable[..., Server], ordering: str
) -> None:
    server = wsgi_server(echo_app, "127.0.0.1")  # on the allow list
    ours, theirs = HttpClientIdentityInstrumentor(), RequestsInstrumentor()
    first, second = (ours, theirs) if ordering == "ours first" else (theirs, ours)
    first.instrument()
    second.instrument()
    try:
        with oi.use_identity(user_id="ada lovelace", tenant_id="acme"):
            reply: dict[str, Any] = requests.get(server.url("/"), timeout=10).json()
    finally:
        second.uninstrument()
        first.uninstrument()
    sent = reply["baggage"] or ""
    assert "user.id" not in sent and "tenant.id" not in sent, sent


def test_with_ours_back_in_place_identity_travels_again(
    wsgi_server: Callable[..., Server],
) -> None:
    server = wsgi_server(echo_app, "127.0.0.1")
    original = propagate.get_global_textmap()
    instrumentor, client = oi.IdentityInstrumentor(), HttpClientIdentityInstrumentor()
    instrumentor.instrument()
    client.instrument()
    try:
        with oi.use_identity(user_id="ada lovelace", tenant_id="acme"):
            reply = requests.get(server.url("/"), timeout=10).json()
    finally:
        client.uninstrument()
        instrumentor.uninstrument()
        propagate.set_global_textmap(original)
    assert "user.id=ada%20lovelace" in json.dumps(reply)
