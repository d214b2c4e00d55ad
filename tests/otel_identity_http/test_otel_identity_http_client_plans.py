"""A request's egress plan is remembered per (baggage header, destination) under one policy
(settings and global textmap), and a signed header per signed mapping: these tests fail when
a remembered plan or header is reused where it does not hold.

Every request goes out through the real transport (requests, with OpenTelemetry's requests
instrumentation loaded before or after ours, so the baggage header is injected before our
check runs) to echo servers on 127.0.0.1 (allowed) and 127.0.0.2 (outside) that answer with
the ``baggage`` header they received.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from otel_identity_http import HttpClientIdentityInstrumentor

import otel_identity as oi
from otel_identity import _signing, names
from tests.egress_events import stripped_addresses
from tests.signing_helpers import HMAC_A

from .conftest import Server

ORDERS = ("ours-first", "theirs-first")


@pytest.fixture(params=ORDERS)
def instrumented(request: pytest.FixtureRequest) -> Iterator[str]:
    ours, theirs = HttpClientIdentityInstrumentor(), RequestsInstrumentor()
    ordered = [ours, theirs] if request.param == "ours-first" else [theirs, ours]
    for instrumentor in ordered:
        instrumentor.instrument()
    yield request.param
    for instrumentor in reversed(ordered):
        instrumentor.uninstrument()


def _members(header: str | None) -> dict[str, str]:
    if not header:
        return {}
    return dict(member.split("=", 1) for member in header.split(","))


def _send(
    tracer: trace.Tracer, server: Server, ctx: Context, headers: dict[str, str] | None = None
) -> dict[str, str]:
    """The baggage members ``server`` received from a request sent under ``ctx``."""
    token = otel_context.attach(ctx)
    try:
        with tracer.start_as_current_span("caller"):
            answer = requests.get(server.url(), headers=headers, timeout=10).json()
    finally:
        otel_context.detach(token)
    return _members(answer["baggage"])


def _identity(user: str = "u-1", **other: str) -> Context:
    ctx = oi.set_identity(user_id=user, tenant_id="acme")
    for key, value in other.items():
        ctx = baggage.set_baggage(key, value, ctx)
    return ctx


IDENTITY = {"user.id": "u-1", "tenant.id": "acme"}


def test_one_header_to_two_destinations_in_turn(
    echo_servers: tuple[Server, Server],
    instrumented: str,
    tracer: trace.Tracer,
    spans: Any,
) -> None:
    oi.configure(egress_allow="127.0.0.1")
    inside, outside = echo_servers
    ctx = _identity(other="kept")
    for _ in range(3):  # the same header, alternately inside and outside, plans remembered
        spans.clear()
        assert _send(tracer, inside, ctx) == {**IDENTITY, "other": "kept"}
        assert stripped_addresses(spans) == []
        assert _send(tracer, outside, ctx) == {"other": "kept"}
        assert stripped_addresses(spans) == ["127.0.0.2"]  # recorded on every request, not once


def test_a_changed_header_is_judged_as_itself(
    echo_servers: tuple[Server, Server],
    instrumented: str,
    tracer: trace.Tracer,
) -> None:
    oi.configure(egress_allow="127.0.0.1")
    inside, outside = echo_servers
    assert _send(tracer, outside, _identity(other="a")) == {"other": "a"}
    assert _send(tracer, outside, _identity(other="b")) == {"other": "b"}
    assert _send(tracer, outside, _identity("u-2")) == {}
    assert _send(tracer, inside, _identity("u-2")) == {"user.id": "u-2", "tenant.id": "acme"}
    assert _send(tracer, inside, _identity(other="b")) == {**IDENTITY, "other": "b"}
    # A header the caller wrote itself, with identity members, is judged by its own value.
    forged = {"baggage": "user.id=forged,other=c"}
    assert _send(tracer, outside, Context(), forged) == {"other": "c"}
    assert _send(tracer, outside, Context(), {"baggage": "other=d"}) == {"other": "d"}


def test_settings_changes_are_seen_on_the_next_request(
    echo_servers: tuple[Server, Server],
    instrumented: str,
    tracer: trace.Tracer,
    spans: Any,
) -> None:
    inside, outside = echo_servers
    ctx = _identity(other="kept")
    oi.configure(egress_allow="127.0.0.1")
    assert _send(tracer, outside, ctx) == {"other": "kept"}
    oi.configure(egress_allow="127.0.0.1,127.0.0.2")  # the allow list widened
    spans.clear()
    assert _send(tracer, outside, ctx) == {**IDENTITY, "other": "kept"}
    assert stripped_addresses(spans) == []
    oi.configure(egress_allow="127.0.0.2")  # and narrowed: the allowed host is now outside
    assert _send(tracer, inside, ctx) == {"other": "kept"}
    assert _send(tracer, outside, ctx) == {**IDENTITY, "other": "kept"}
    oi.configure(egress_allow="127.0.0.1")
    assert _send(tracer, outside, ctx) == {"other": "kept"}
    oi.configure(egress_strip_all_baggage=True)  # another setting, the same allow list
    assert _send(tracer, outside, ctx) == {}
    assert _send(tracer, inside, ctx) == {**IDENTITY, "other": "kept"}
    oi.configure(egress_strip_all_baggage=False)
    assert _send(tracer, outside, ctx) == {"other": "kept"}


class Clock:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.minutes = float(int(time.time() / 60))
        monkeypatch.setattr(_signing, "_now_minutes", lambda: self.minutes)


def _verified(members: dict[str, str]) -> oi.Identity | None:
    header = ",".join(f"{key}={value}" for key, value in members.items())
    return oi.get_identity(oi.extract({"baggage": header}, hop=names.HOP_HTTP_SERVER))


def _exp(members: dict[str, str]) -> int:
    return int(members["identity.sig"].split(".")[2])


def test_signed_baggage_is_renewed_near_expiry_and_never_leaves_outside(
    echo_servers: tuple[Server, Server],
    instrumented: str,
    tracer: trace.Tracer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock(monkeypatch)
    oi.configure(egress_allow="127.0.0.1", signing_keys=f"k1:{HMAC_A}", inbound="verify")
    inside, outside = echo_servers
    ctx = _identity(other="kept")

    first = _send(tracer, inside, ctx)
    assert _send(tracer, inside, ctx) == first  # half its life left: the same token
    identity = _verified(first)
    assert identity is not None and identity.verified and identity.user_id == "u-1"
    assert _send(tracer, outside, ctx) == {"other": "kept"}  # no identity, no signature

    clock.minutes += 3  # less than half of the 5 minutes of token_ttl left: renewed
    renewed = _send(tracer, inside, ctx)
    assert _exp(renewed) == _exp(first) + 3
    assert {k: v for k, v in renewed.items() if k != "identity.sig"} == {
        **IDENTITY,
        "other": "kept",
    }
    clock.minutes += 2.2  # the first token has expired; the renewed one holds, not renewed
    assert _verified(first) is None
    identity = _verified(renewed)
    assert identity is not None and identity.verified
    assert _send(tracer, inside, ctx) == renewed  # and is what is sent meanwhile

    # Another identity through the same policy: its own signature, not the last one sent.
    other = _send(tracer, inside, _identity("u-2", other="kept"))
    assert other["user.id"] == "u-2" and other["identity.sig"] != renewed["identity.sig"]
    identity = _verified(other)
    assert identity is not None and identity.user_id == "u-2"
    # A context without identity: its baggage as it is, nothing signed.
    plain = baggage.set_baggage("other", "kept", Context())
    assert _send(tracer, inside, plain) == {"other": "kept"}


def test_signing_switched_on_and_off_between_requests(
    echo_servers: tuple[Server, Server],
    instrumented: str,
    tracer: trace.Tracer,
) -> None:
    oi.configure(egress_allow="127.0.0.1")
    inside, _outside = echo_servers
    ctx = _identity()
    assert _send(tracer, inside, ctx) == IDENTITY
    oi.configure(signing_keys=f"k1:{HMAC_A}")
    signed = _send(tracer, inside, ctx)
    assert set(signed) == {*IDENTITY, "identity.sig"}
    oi.configure(signing_keys="")
    assert _send(tracer, inside, ctx) == IDENTITY


def test_a_replaced_textmap_is_a_new_policy(
    echo_servers: tuple[Server, Server],
    instrumented: str,
    tracer: trace.Tracer,
) -> None:
    """The plans are the policy's: a global textmap replaced between requests is decided
    afresh (here one of an unknown shape: baggage decoded, stripped, re-encoded)."""
    from opentelemetry import propagate
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    class Other(TextMapPropagator):
        def extract(self, carrier: Any, context: Any = None, getter: Any = None) -> Any:
            return context

        def inject(self, carrier: Any, context: Any = None, setter: Any = None) -> None:
            carrier["x-other"] = "1"

        @property
        def fields(self) -> set[str]:
            return {"x-other"}

    oi.configure(egress_allow="127.0.0.1")
    inside, outside = echo_servers
    ctx = _identity(other="kept")
    assert _send(tracer, outside, ctx) == {"other": "kept"}
    previous = propagate.get_global_textmap()
    propagate.set_global_textmap(
        CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator(), Other()])
    )
    try:
        assert _send(tracer, outside, ctx) == {"other": "kept"}
        assert _send(tracer, inside, ctx) == {**IDENTITY, "other": "kept"}
    finally:
        propagate.set_global_textmap(previous)
    assert _send(tracer, outside, ctx) == {"other": "kept"}
    assert _send(tracer, inside, ctx) == {**IDENTITY, "other": "kept"}


def test_plans_are_bounded(
    echo_servers: tuple[Server, Server],
    instrumented: str,
    tracer: trace.Tracer,
) -> None:
    """Headers from elsewhere (a flood of distinct values) cost a miss each, never memory."""
    from otel_identity_http import _client

    oi.configure(egress_allow="127.0.0.1")
    _inside, outside = echo_servers
    for n in range(20):
        assert _send(tracer, outside, Context(), {"baggage": f"other={n}"}) == {"other": str(n)}
    policy = _client.current_policy()
    assert len(policy.plans) <= _client._FILTERED_LIMIT
    long_value = "x" * (_client._FILTERED_MAX_CHARS + 1)
    assert _send(tracer, outside, Context(), {"baggage": f"other={long_value}"}) == {
        "other": long_value
    }
    assert all(len(header) <= _client._FILTERED_MAX_CHARS for header, _host in policy.plans)


def test_a_displaced_baggage_step_is_seen_on_the_next_request(
    echo_servers: tuple[Server, Server],
    instrumented: str,
    tracer: trace.Tracer,
) -> None:
    """The same header to the same allowed host: carried while ours is the baggage step,
    stripped from the request on where another took its place, carried again when ours is
    back."""
    from opentelemetry import propagate
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    original = propagate.get_global_textmap()
    core = oi.IdentityInstrumentor()
    core.instrument()
    ours = propagate.get_global_textmap()
    try:
        oi.configure(egress_allow="127.0.0.1")
        inside, _outside = echo_servers
        ctx = _identity()
        assert _send(tracer, inside, ctx) == IDENTITY
        propagate.set_global_textmap(
            CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
        )
        assert _send(tracer, inside, ctx) == {}
        propagate.set_global_textmap(ours)
        assert _send(tracer, inside, ctx) == IDENTITY
    finally:
        core.uninstrument()
        propagate.set_global_textmap(original)


@pytest.mark.parametrize("client", ["requests", "urllib3"])
def test_a_signing_plan_leaves_a_context_without_identity_as_it_is(
    echo_servers: tuple[Server, Server], client: str
) -> None:
    """Signing keys set, a baggage header written by the caller, no identity in the context:
    the remembered signing plan for the allowed host changes nothing."""
    import json

    import urllib3

    oi.configure(egress_allow="127.0.0.1", signing_keys=f"k1:{HMAC_A}")
    inside, outside = echo_servers
    ours = HttpClientIdentityInstrumentor()
    ours.instrument()
    try:
        for server, expected in ((inside, "other=kept"), (outside, "other=kept")) * 2:
            headers = {"baggage": "other=kept"}
            if client == "requests":
                answer = requests.get(server.url(), headers=headers, timeout=10).json()
            else:
                with urllib3.PoolManager() as pool:
                    reply = pool.request("GET", server.url(), headers=headers, timeout=10)
                    answer = json.loads(reply.data)
            assert answer["baggage"] == expected
        with oi.use_identity(user_id="u-1"):  # and with identity, the same plan signs
            answer = requests.get(inside.url(), timeout=10).json()
        assert "identity.sig=" in answer["baggage"]
    finally:
        ours.uninstrument()


def test_the_same_url_through_a_proxy_outside_is_judged_by_the_proxy(
    echo_servers: tuple[Server, Server],
    instrumented: str,
    tracer: trace.Tracer,
    spans: Any,
) -> None:
    """One header and one URL, sent straight (identity carried) and then through a proxy
    outside the list (an echo server that answers itself): the proxy reads the request, so
    the plan remembered for the URL's own host is not the one used."""
    oi.configure(egress_allow="127.0.0.1")
    inside, outside = echo_servers
    ctx = _identity(other="kept")
    token = otel_context.attach(ctx)
    try:
        for _ in range(2):
            spans.clear()
            with tracer.start_as_current_span("caller"):
                straight = requests.get(inside.url(), timeout=10).json()
                proxied = requests.get(
                    inside.url(), proxies={"http": outside.url("")}, timeout=10
                ).json()
            assert _members(straight["baggage"]) == {**IDENTITY, "other": "kept"}
            assert _members(proxied["baggage"]) == {"other": "kept"}
            assert stripped_addresses(spans) == ["127.0.0.2"]
    finally:
        otel_context.detach(token)


# -- a baggage header written by hand, with no baggage step in the textmap --------------------


@pytest.fixture
def tracecontext_only() -> Iterator[None]:
    """A textmap with no baggage step: no step writes ``baggage``, the caller may."""
    from opentelemetry import propagate
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    previous = propagate.get_global_textmap()
    propagate.set_global_textmap(TraceContextTextMapPropagator())
    yield
    propagate.set_global_textmap(previous)


HAND_WRITTEN = pytest.mark.parametrize(
    "header",
    [
        "user.id=mallory,tenant.id=acme,other=kept",
        "%75ser.id=mallory,other=kept",  # the key percent-encoded: decoded, it is user.id
        "other=kept, user.id = mallory ",
    ],
    ids=["plain", "encoded-key", "spaces"],
)


@HAND_WRITTEN
def test_a_hand_written_baggage_header_loses_its_identity_outside_egress_allow(
    echo_servers: tuple[Server, Server],
    instrumented: str,
    tracer: trace.Tracer,
    spans: Any,
    tracecontext_only: None,
    header: str,
) -> None:
    """DESIGN: filtering holds whatever wrote the header. With no baggage step in the
    textmap, a header the caller wrote still loses its identity members outside
    ``egress_allow`` (and keeps the rest); inside, it goes as written."""
    oi.configure(egress_allow="127.0.0.1")
    inside, outside = echo_servers
    for _ in range(2):  # (the second time through the remembered policy)
        spans.clear()
        assert _send(tracer, outside, Context(), {"baggage": header}) == {"other": "kept"}
        assert stripped_addresses(spans) == ["127.0.0.2"]
        spans.clear()
        received = _send(tracer, inside, Context(), {"baggage": header})
        assert received.get("other", "").strip() == "kept"
        assert stripped_addresses(spans) == []


@HAND_WRITTEN
def test_a_hand_written_baggage_header_through_urllib3_alone(
    echo_servers: tuple[Server, Server], tracecontext_only: None, header: str
) -> None:
    """The same below requests: urllib3's connection, the last point the headers are one."""
    import json

    import urllib3

    oi.configure(egress_allow="127.0.0.1")
    _inside, outside = echo_servers
    instrumentor = HttpClientIdentityInstrumentor()
    instrumentor.instrument()
    try:
        with urllib3.PoolManager() as pool:
            answer = pool.request("GET", outside.url(), headers={"baggage": header}, timeout=10)
    finally:
        instrumentor.uninstrument()
    assert _members(json.loads(answer.data)["baggage"]) == {"other": "kept"}
