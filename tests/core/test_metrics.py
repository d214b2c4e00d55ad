"""The dashboard metrics: what is counted, under which attributes, and that sampling never
changes a count (a 1% sampler must not hide a lost hop from the coverage panel)."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

import otel_identity as oi
from otel_identity import names

KEY = base64.b64encode(b"k" * 32).decode()
Points = dict[frozenset[tuple[str, object]], float]


def points(reader: InMemoryMetricReader, metric: str) -> Points:
    """Every data point of ``metric`` now: attributes -> value (count for a histogram)."""
    found: Points = {}
    data = reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for m in scope_metrics.metrics:
                if m.name != metric:
                    continue
                for point in m.data.data_points:
                    value = getattr(point, "value", None)
                    if value is None:
                        value = point.count  # type: ignore[union-attr]
                    found[frozenset((point.attributes or {}).items())] = value
    return found


def grew(before: Points, after: Points) -> dict[frozenset[tuple[str, object]], float]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


@pytest.fixture
def unsampled() -> Iterator[InMemorySpanExporter]:
    """A current span that does not record, as under a sampler that dropped this trace."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("tests").start_as_current_span("dropped") as span:
        assert not span.is_recording()
        yield exporter
    assert exporter.get_finished_spans() == ()


def test_a_rejected_hop_is_counted_with_its_reason(metric_reader: InMemoryMetricReader) -> None:
    oi.configure(signing_keys=f"k1:{KEY}")
    carrier: dict[str, str] = {}
    oi.inject(carrier, context=oi.set_identity(context=Context(), user_id="u"))
    forged = {"baggage": carrier["baggage"].replace("user.id=u", "user.id=admin")}
    before = points(metric_reader, names.METRIC_HOPS)
    oi.extract(forged, hop=names.HOP_GRPC_SERVER)
    oi.extract(carrier, hop=names.HOP_GRPC_SERVER)
    assert grew(before, points(metric_reader, names.METRIC_HOPS)) == {
        frozenset(
            {
                (names.ATTR_HOP, names.HOP_GRPC_SERVER),
                (names.ATTR_OUTCOME, names.OUTCOME_REJECTED),
                (names.ATTR_REJECT_REASON, names.REASON_BAD_SIGNATURE),
            }
        ): 1,
        frozenset(
            {(names.ATTR_HOP, names.HOP_GRPC_SERVER), (names.ATTR_OUTCOME, names.OUTCOME_PRESENT)}
        ): 1,
    }


def test_hops_are_counted_when_no_span_records(
    metric_reader: InMemoryMetricReader, unsampled: InMemorySpanExporter
) -> None:
    before = points(metric_reader, names.METRIC_HOPS)
    oi.extract({}, hop=names.HOP_QUEUE_CONSUME)
    missing = frozenset(
        {(names.ATTR_HOP, names.HOP_QUEUE_CONSUME), (names.ATTR_OUTCOME, names.OUTCOME_MISSING)}
    )
    assert grew(before, points(metric_reader, names.METRIC_HOPS)) == {missing: 1}


def test_egress_strips_are_counted_by_hop_when_no_span_records(
    metric_reader: InMemoryMetricReader, unsampled: InMemorySpanExporter
) -> None:
    before = points(metric_reader, names.METRIC_EGRESS_STRIPPED)
    ctx = oi.set_identity(user_id="u")
    for destination in ("api.example.com", "8.8.8.8", "10.0.0.1"):  # the last one is allowed
        oi.inject({}, destination=destination, hop=names.HOP_HTTP_CLIENT, context=ctx)
    assert grew(before, points(metric_reader, names.METRIC_EGRESS_STRIPPED)) == {
        frozenset({(names.ATTR_HOP, names.HOP_HTTP_CLIENT)}): 2
    }


def test_egress_strip_is_counted_once_and_recorded_once_on_a_recording_span(
    metric_reader: InMemoryMetricReader, spans: InMemorySpanExporter, tracer: trace.Tracer
) -> None:
    before = points(metric_reader, names.METRIC_EGRESS_STRIPPED)
    token = context.attach(oi.set_identity(user_id="u"))
    try:
        with tracer.start_as_current_span("call"):
            oi.inject({}, destination="api.example.com", hop=names.HOP_GRPC_CLIENT)
    finally:
        context.detach(token)
    assert grew(before, points(metric_reader, names.METRIC_EGRESS_STRIPPED)) == {
        frozenset({(names.ATTR_HOP, names.HOP_GRPC_CLIENT)}): 1
    }
    events = [e for s in spans.get_finished_spans() for e in s.events]
    assert [e.name for e in events] == [names.EVENT_STRIPPED]


def test_resolver_failures_are_counted_by_exception_type_and_timed(
    metric_reader: InMemoryMetricReader, unsampled: InMemorySpanExporter
) -> None:
    class LdapDown(Exception):
        pass

    def broken(identity: oi.Identity) -> object:
        raise LdapDown

    oi.set_user_resolver(broken)
    failures = points(metric_reader, names.METRIC_RESOLVE_FAILURES)
    durations = sum(points(metric_reader, names.METRIC_RESOLVE_DURATION).values())
    for _ in range(2):
        with oi.continue_from({"baggage": "user.id=u"}, hop=names.HOP_QUEUE_CONSUME):
            assert oi.get_current_user() is None
    assert grew(failures, points(metric_reader, names.METRIC_RESOLVE_FAILURES)) == {
        frozenset({(names.ATTR_EXCEPTION_TYPE, "LdapDown")}): 2
    }
    assert sum(points(metric_reader, names.METRIC_RESOLVE_DURATION).values()) == durations + 2
