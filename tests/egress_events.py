"""The ``identity.stripped`` events of finished spans, as the egress tests read them."""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from otel_identity import names


def stripped(spans: InMemorySpanExporter) -> list[tuple[SpanKind, str]]:
    """(kind of the span, destination) of every ``identity.stripped`` event, in order."""
    return [
        (span.kind, str((event.attributes or {})[names.ATTR_SERVER_ADDRESS]))
        for span in spans.get_finished_spans()
        for event in span.events
        if event.name == names.EVENT_STRIPPED
    ]


def stripped_addresses(spans: InMemorySpanExporter) -> list[str]:
    """The destination of every ``identity.stripped`` event, in order."""
    return [address for _kind, address in stripped(spans)]
