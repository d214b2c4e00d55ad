"""IdentitySpanProcessor: attributes and events on exported spans."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import otel_identity as oi


def test_every_span_under_an_identity_carries_it(
    spans: InMemorySpanExporter, tracer: trace.Tracer
) -> None:
    with oi.use_identity(user_id="u1", tenant_id="t1", session_id="s1", roles=["a", "b"]):
        with tracer.start_as_current_span("parent"), tracer.start_as_current_span("child"):
            pass
    for span in spans.get_finished_spans():
        assert dict(span.attributes or {}) == {
            "user.id": "u1",
            "tenant.id": "t1",
            "session.id": "s1",
            "user.roles": ("a", "b"),
            "identity.verified": False,
        }


def test_spans_without_identity_get_no_identity_attributes(
    spans: InMemorySpanExporter, tracer: trace.Tracer
) -> None:
    with tracer.start_as_current_span("plain"):
        pass
    (span,) = spans.get_finished_spans()
    assert not any(k.startswith(("user.", "tenant.", "identity.")) for k in span.attributes or {})


def test_privacy_mode_hash_replaces_user_id(
    spans: InMemorySpanExporter, tracer: trace.Tracer
) -> None:
    oi.configure(span_attributes="hash")
    with oi.use_identity(user_id="alice", tenant_id="t"), tracer.start_as_current_span("s"):
        pass
    (span,) = spans.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert "user.id" not in attributes
    assert len(str(attributes["user.hash"])) == 64 and attributes["tenant.id"] == "t"


def test_mode_none_records_no_identity_attributes(
    spans: InMemorySpanExporter, tracer: trace.Tracer
) -> None:
    oi.configure(span_attributes="none")
    with oi.use_identity(user_id="alice"), tracer.start_as_current_span("s"):
        pass
    (span,) = spans.get_finished_spans()
    assert not span.attributes


def test_server_and_consumer_spans_without_identity_record_missing(
    spans: InMemorySpanExporter, tracer: trace.Tracer
) -> None:
    with tracer.start_as_current_span("GET /orders", kind=SpanKind.SERVER):
        pass
    with tracer.start_as_current_span("orders process", kind=SpanKind.CONSUMER):
        pass
    with tracer.start_as_current_span("/shop.Orders/Get", kind=SpanKind.SERVER) as s:
        s.set_attribute("rpc.system", "grpc")
    with tracer.start_as_current_span("internal work"):
        pass
    by_name = {
        s.name: [(e.name, dict(e.attributes or {})) for e in s.events]
        for s in spans.get_finished_spans()
    }
    assert by_name["GET /orders"] == [
        (
            "identity.missing",
            {"identity.hop": "http.server", "identity.missing_keys": ("user.id", "tenant.id")},
        )
    ]
    assert by_name["orders process"][0][1]["identity.hop"] == "queue.consume"
    assert by_name["internal work"] == []


def test_grpc_server_spans_are_recognised_by_their_start_attributes(
    spans: InMemorySpanExporter, tracer: trace.Tracer
) -> None:
    with tracer.start_as_current_span(
        "/shop.Orders/Get", kind=SpanKind.SERVER, attributes={"rpc.system": "grpc"}
    ):
        pass
    (span,) = spans.get_finished_spans()
    assert span.events[0].attributes["identity.hop"] == "grpc.server"  # type: ignore[index]


def test_anonymous_routes_are_exempt_on_server_spans(
    spans: InMemorySpanExporter, tracer: trace.Tracer
) -> None:
    oi.configure(anonymous_routes="/healthz")
    with tracer.start_as_current_span(
        "GET /healthz", kind=SpanKind.SERVER, attributes={"http.route": "/healthz"}
    ):
        pass
    (span,) = spans.get_finished_spans()
    assert span.events == ()


def test_hops_not_required_record_nothing(
    spans: InMemorySpanExporter, tracer: trace.Tracer
) -> None:
    oi.configure(required_hops="grpc.server")
    with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER):
        pass
    (span,) = spans.get_finished_spans()
    assert span.events == ()


def test_edge_services_with_strip_policy_expect_no_identity_at_span_start(
    spans: InMemorySpanExporter, tracer: trace.Tracer
) -> None:
    oi.configure(inbound="strip")
    with tracer.start_as_current_span("GET /login", kind=SpanKind.SERVER):
        pass
    (span,) = spans.get_finished_spans()
    assert span.events == ()


def test_pending_hop_events_go_on_the_first_span_only(
    spans: InMemorySpanExporter, tracer: trace.Tracer
) -> None:
    with oi.continue_from({}, hop="queue.consume"):
        with tracer.start_as_current_span("first"), tracer.start_as_current_span("second"):
            pass
    by_name = {s.name: [e.name for e in s.events] for s in spans.get_finished_spans()}
    assert by_name == {"first": ["identity.missing"], "second": []}


def test_processor_can_be_used_on_its_own_provider_with_an_override() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(oi.IdentitySpanProcessor(span_attributes="hash"))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with oi.use_identity(user_id="bob"), provider.get_tracer("t").start_as_current_span("s"):
        pass
    (span,) = exporter.get_finished_spans()
    assert "user.hash" in (span.attributes or {})


def test_disabled_processor_does_nothing() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    processor = oi.IdentitySpanProcessor()
    processor.enabled = False
    provider.add_span_processor(processor)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with oi.use_identity(user_id="bob"), provider.get_tracer("t").start_as_current_span("s"):
        pass
    (span,) = exporter.get_finished_spans()
    assert not span.attributes


# --- the direct attribute path --------------------------------------------------------------


def _identity_span(provider: TracerProvider, **attributes: object) -> ReadableSpan:
    exporter = InMemorySpanExporter()
    provider.add_span_processor(oi.IdentitySpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with oi.use_identity(user_id="u-direct-" + "x" * 40, tenant_id="t1", roles=["a", "b"]):
        provider.get_tracer("t").start_span("s", attributes=attributes).end()  # type: ignore[arg-type]
    (span,) = exporter.get_finished_spans()
    return span


def _as_public_api_would(provider: TracerProvider, **attributes: object) -> ReadableSpan:
    """The same span, its identity attributes given through ``set_attributes``."""
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    identity = oi.Identity(user_id="u-direct-" + "x" * 40, tenant_id="t1", roles=("a", "b"))
    span = provider.get_tracer("t").start_span("s", attributes=attributes)  # type: ignore[arg-type]
    span.set_attributes(
        {
            "user.id": identity.user_id,
            "tenant.id": identity.tenant_id,
            "user.roles": identity.roles,
            "identity.verified": False,
        }
    )
    span.end()
    (exported,) = exporter.get_finished_spans()
    return exported


def test_the_installed_sdk_takes_the_direct_attribute_path(monkeypatch: Any) -> None:
    # If an SDK release changes its span internals, this fails (and spans fall back to
    # set_attributes, correct but slower): time to look at the direct path in
    # IdentitySpanProcessor.on_start again.
    def refuse(self: Any, attributes: Any) -> None:
        raise AssertionError("set_attributes was called")

    monkeypatch.setattr(sdk_trace.Span, "set_attributes", refuse)
    span = _identity_span(TracerProvider(), given="kept")
    assert span.attributes is not None
    assert span.attributes["tenant.id"] == "t1"
    assert span.attributes["given"] == "kept"


@pytest.mark.parametrize(
    "limits",
    [
        SpanLimits(),
        SpanLimits(max_span_attributes=3),  # no room: the SDK drops the oldest
        SpanLimits(max_attribute_length=12),  # values cut to length by the SDK
    ],
    ids=["no-limit", "attribute-count-limit", "value-length-limit"],
)
def test_direct_and_public_attribute_paths_give_the_same_span(limits: SpanLimits) -> None:
    ours = _identity_span(TracerProvider(span_limits=limits), given="kept")
    public = _as_public_api_would(TracerProvider(span_limits=limits), given="kept")
    assert dict(ours.attributes or {}) == dict(public.attributes or {})
    assert ours.dropped_attributes == public.dropped_attributes


def test_the_processor_takes_every_call_the_span_processor_protocol_allows() -> None:
    # Wrappers and composite processors call these by keyword as well as by position.
    processor = oi.IdentitySpanProcessor()
    span = TracerProvider().get_tracer("t").start_span("s")
    processor.on_start(span, parent_context=None)
    processor.on_start(span=span, parent_context=None)
    processor._on_ending(span)
    processor._on_ending(span=span)
    processor.on_end(span)
    processor.on_end(span=span)
    assert processor.force_flush(timeout_millis=10) is True
    processor.shutdown()
