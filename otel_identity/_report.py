"""``otel-identity report FILE``: identity coverage of exported traces.

Reads spans exported as OTLP JSON (the Collector's ``file`` exporter: one
``ExportTraceServiceRequest`` per line) or as the Python SDK's ``ConsoleSpanExporter`` output,
and prints, per service and hop kind, how many receiving hops had identity, how many arrived
without it or with identity that failed policy, and the hops where identity was lost (a span
without identity whose parent had one). ``--html PATH`` writes the same as a page.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from otel_identity import names

_IDENTITY_ATTRIBUTES = (names.USER_ID, names.USER_HASH, names.TENANT_ID)
_RECEIVING_KINDS = {"SERVER", "CONSUMER"}


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: str
    service: str
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]

    @property
    def has_identity(self) -> bool:
        return any(key in self.attributes for key in _IDENTITY_ATTRIBUTES)

    def event(self, name: str) -> dict[str, Any] | None:
        return next((attrs for event, attrs in self.events if event == name), None)

    @property
    def hop(self) -> str | None:
        for _, attrs in self.events:
            if names.ATTR_HOP in attrs:
                return str(attrs[names.ATTR_HOP])
        if self.kind == "CONSUMER":
            return names.HOP_QUEUE_CONSUME
        if self.kind == "SERVER":
            grpc = self.attributes.get("rpc.system") == "grpc"
            return names.HOP_GRPC_SERVER if grpc else names.HOP_HTTP_SERVER
        return None


@dataclass
class Row:
    hops: int = 0
    present: int = 0
    missing: int = 0
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def coverage(self) -> float:
        return self.present / self.hops if self.hops else 1.0


def _value(raw: Mapping[str, Any]) -> Any:
    """An OTLP AnyValue as a Python value."""
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in raw:
            return raw[key]
    if "intValue" in raw:
        return int(raw["intValue"])
    if "arrayValue" in raw:
        return tuple(_value(v) for v in raw["arrayValue"].get("values", []))
    return None


def _attributes(raw: Any) -> dict[str, Any]:
    if isinstance(raw, Mapping):  # console exporter: already a mapping
        return dict(raw)
    return {item["key"]: _value(item.get("value", {})) for item in raw or []}


def _documents(text: str) -> Iterator[Any]:
    """Every JSON value in ``text``: JSON lines, concatenated objects or one array."""
    decoder = json.JSONDecoder()
    index, end = 0, len(text)
    while index < end:
        while index < end and text[index] in " \t\r\n,":
            index += 1
        if index >= end:
            return
        value, index = decoder.raw_decode(text, index)
        if isinstance(value, list):
            yield from value
        else:
            yield value


def _otlp_spans(doc: Mapping[str, Any]) -> Iterator[Span]:
    for resource_spans in doc.get("resourceSpans", []):
        resource = _attributes(resource_spans.get("resource", {}).get("attributes"))
        service = str(resource.get("service.name", "unknown_service"))
        for scope_spans in resource_spans.get("scopeSpans", []):
            for raw in scope_spans.get("spans", []):
                kind = str(raw.get("kind", "")).removeprefix("SPAN_KIND_")
                kind = {"2": "SERVER", "3": "CLIENT", "4": "PRODUCER", "5": "CONSUMER"}.get(
                    kind, kind
                )
                yield Span(
                    trace_id=str(raw.get("traceId", "")),
                    span_id=str(raw.get("spanId", "")),
                    parent_id=raw.get("parentSpanId") or None,
                    name=str(raw.get("name", "")),
                    kind=kind,
                    service=service,
                    attributes=_attributes(raw.get("attributes")),
                    events=[
                        (str(e.get("name", "")), _attributes(e.get("attributes")))
                        for e in raw.get("events", [])
                    ],
                )


def _console_span(doc: Mapping[str, Any]) -> Span:
    context = doc.get("context") or {}
    resource = (doc.get("resource") or {}).get("attributes") or {}
    return Span(
        trace_id=str(context.get("trace_id", "")),
        span_id=str(context.get("span_id", "")),
        parent_id=doc.get("parent_id") or None,
        name=str(doc.get("name", "")),
        kind=str(doc.get("kind", "")).removeprefix("SpanKind."),
        service=str(resource.get("service.name", "unknown_service")),
        attributes=_attributes(doc.get("attributes")),
        events=[
            (str(e.get("name", "")), _attributes(e.get("attributes")))
            for e in doc.get("events") or []
        ],
    )


def load(text: str) -> list[Span]:
    spans: list[Span] = []
    for doc in _documents(text):
        if not isinstance(doc, Mapping):
            continue
        if "resourceSpans" in doc:
            spans.extend(_otlp_spans(doc))
        elif "context" in doc and "name" in doc:
            spans.append(_console_span(doc))
    return spans


@dataclass
class Report:
    rows: dict[tuple[str, str], Row]
    lost: list[tuple[Span, Span | None]]
    spans: int


def analyse(spans: Iterable[Span]) -> Report:
    spans = list(spans)
    by_id = {(s.trace_id, s.span_id): s for s in spans}
    rows: dict[tuple[str, str], Row] = {}
    lost: list[tuple[Span, Span | None]] = []
    for span in spans:
        missing = span.event(names.EVENT_MISSING)
        rejected = span.event(names.EVENT_REJECTED)
        receiving = span.kind in _RECEIVING_KINDS or missing is not None or rejected is not None
        hop = span.hop
        if not receiving or hop is None:
            continue
        row = rows.setdefault((span.service, hop), Row())
        row.hops += 1
        if span.has_identity:
            row.present += 1
        if missing is not None:
            row.missing += 1
        if rejected is not None:
            row.rejected += 1
            row.reasons[str(rejected.get(names.ATTR_REJECT_REASON, "?"))] += 1
        if not span.has_identity and (missing is not None or rejected is not None):
            parent = by_id.get((span.trace_id, span.parent_id or ""))
            lost.append((span, parent))
    return Report(rows, lost, len(spans))


def _reasons(row: Row) -> str:
    if not row.reasons:
        return ""
    return " (" + ", ".join(f"{k}={v}" for k, v in sorted(row.reasons.items())) + ")"


def render_text(report: Report) -> str:
    header = ("service", "hop", "hops", "identity", "missing", "rejected", "coverage")
    body = [
        (
            service,
            hop,
            str(row.hops),
            str(row.present),
            str(row.missing),
            str(row.rejected)
            + (
                f" ({', '.join(f'{k}={v}' for k, v in row.reasons.items())})" if row.reasons else ""
            ),
            f"{row.coverage:.0%}",
        )
        for (service, hop), row in sorted(report.rows.items())
    ]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in [header, *body]
    ]
    lines.insert(1, "-" * len(lines[0]))
    lines.append("")
    lines.append(f"{report.spans} spans read; identity lost on {len(report.lost)} hop(s)")
    for span, parent in report.lost:
        came_from = (
            f"after {parent.service}/{parent.name!r}"
            + (" which had identity" if parent.has_identity else "")
            if parent is not None
            else "(no parent in the file)"
        )
        lines.append(f"  {span.service}/{span.name!r} [{span.hop}] {came_from}")
    return "\n".join(lines) + "\n"


def render_html(report: Report) -> str:
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(service)}</td><td>{esc(hop)}</td><td>{row.hops}</td>"
        f"<td>{row.present}</td><td>{row.missing}</td><td>{row.rejected}</td>"
        f"<td class='{'ok' if row.coverage == 1 else 'bad'}'>{row.coverage:.0%}</td></tr>"
        for (service, hop), row in sorted(report.rows.items())
    )
    lost = "".join(
        f"<li><b>{esc(span.service)}</b> {esc(span.name)} [{esc(str(span.hop))}]"
        + (f" after {esc(parent.service)} {esc(parent.name)}" if parent else "")
        + "</li>"
        for span, parent in report.lost
    )
    return (
        "<!doctype html><meta charset='utf-8'><title>otel-identity coverage</title>"
        "<style>body{font-family:sans-serif}td,th{padding:4px 10px;text-align:left}"
        ".ok{color:#080}.bad{color:#b00;font-weight:bold}</style>"
        "<h1>Identity coverage</h1><table><tr><th>service</th><th>hop</th><th>hops</th>"
        "<th>identity</th><th>missing</th><th>rejected</th><th>coverage</th></tr>"
        f"{rows}</table><h2>Where identity was lost ({len(report.lost)})</h2><ul>{lost}</ul>"
        f"<p>{report.spans} spans read.</p>"
    )
