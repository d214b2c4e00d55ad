"""Hop counts and server-span events, as the tests of a receiving hop read them."""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from otel_identity import _telemetry

Counts = dict[tuple[str, ...], int]


def totals(hop: str) -> Counts:
    """The counts of ``hop`` hops, by outcome (and reject reason), hop kind left off."""
    return {key[1:]: n for key, n in _telemetry.hop_totals().items() if key[0] == hop}


def delta(before: Counts, hop: str) -> Counts:
    """What ``hop`` counted since ``before`` (a ``totals``), where it changed."""
    after = totals(hop)
    return {
        key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)
    }


def server_events(exporter: InMemorySpanExporter) -> list[str]:
    """The names of the events on the finished SERVER spans, in order."""
    return [
        event.name
        for span in exporter.get_finished_spans()
        if span.kind is SpanKind.SERVER
        for event in span.events
    ]
