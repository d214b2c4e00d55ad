"""``otel-identity report FILE``: identity coverage of exported traces.

Reads spans as OTLP JSON (the Collector's ``file`` exporter: one ``ExportTraceServiceRequest``
per line), OTLP protobuf (request bodies as the OTLP/HTTP exporter sends them, one per file or
length-delimited), Zipkin v2 JSON, or the Python SDK's ``ConsoleSpanExporter`` output (other
lines skipped and counted), recognised from the content; and prints, per service and hop kind,
how many receiving hops had identity, how many arrived without it or with identity that failed
policy, the work of each tenant, and the hops where identity was lost (a span without identity
whose parent had one). ``--html PATH`` writes the same as a page (``_report_page.render``)::

    loaded = read(open("spans.json", "rb").read())
    print(render_text(analyse(loaded.spans)))
"""

from __future__ import annotations

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


def _ident(raw: object) -> str:
    """A trace or span id as lower-case hex, whichever way the format spelled it."""
    return str(raw or "").lower().removeprefix("0x")


def _documents(text: str) -> Iterator[Any]:
    """Every JSON value in ``text`` (JSON lines, concatenated or pretty-printed objects, arrays),
    and ``None`` for each line that holds no JSON (an app's own output between spans)."""
    decoder = json.JSONDecoder()
    index, end = 0, len(text)
    while index < end:
        while index < end and text[index] in " \t\r\n,":
            index += 1
        if index >= end:
            return
        value: Any = None
        if text[index] in "{[":
            try:
                value, index = decoder.raw_decode(text, index)
            except ValueError:
                value = None
        if value is None:
            newline = text.find("\n", index)
            index = end if newline < 0 else newline + 1
            yield None
            continue
        if isinstance(value, list):
            yield from value
        else:
            yield value


def _otlp_spans(doc: Mapping[str, Any]) -> Iterator[Span]:
    for resource_spans in doc.get("resourceSpans") or []:
        resource = _attributes((resource_spans.get("resource") or {}).get("attributes"))
        service = str(resource.get("service.name", "unknown_service"))
        for scope_spans in resource_spans.get("scopeSpans") or []:
            for raw in scope_spans.get("spans") or []:
                kind = str(raw.get("kind", "")).removeprefix("SPAN_KIND_")
                kind = _OTLP_KINDS.get(kind, kind)
                yield Span(
                    trace_id=_ident(raw.get("traceId")),
                    span_id=_ident(raw.get("spanId")),
                    parent_id=_ident(raw.get("parentSpanId")) or None,
                    name=str(raw.get("name", "")),
                    kind=kind,
                    service=service,
                    attributes=_attributes(raw.get("attributes")),
                    events=[
                        (str(e.get("name", "")), _attributes(e.get("attributes")))
                        for e in raw.get("events") or []
                    ],
                )


_OTLP_KINDS = {
    "0": "",
    "1": "INTERNAL",
    "2": "SERVER",
    "3": "CLIENT",
    "4": "PRODUCER",
    "5": "CONSUMER",
}


def _console_span(doc: Mapping[str, Any]) -> Span:
    context = doc.get("context") or {}
    resource = (doc.get("resource") or {}).get("attributes") or {}
    return Span(
        trace_id=_ident(context.get("trace_id")),
        span_id=_ident(context.get("span_id")),
        parent_id=_ident(doc.get("parent_id")) or None,
        name=str(doc.get("name", "")),
        kind=str(doc.get("kind", "")).removeprefix("SpanKind."),
        service=str(resource.get("service.name", "unknown_service")),
        attributes=_attributes(doc.get("attributes")),
        events=[
            (str(e.get("name", "")), _attributes(e.get("attributes")))
            for e in doc.get("events") or []
        ],
    )


def _zipkin_event(annotation: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """OpenTelemetry's Zipkin exporter writes an event as ``{"<name>": {attributes}}`` text."""
    value = annotation.get("value")
    try:
        decoded = json.loads(str(value))
    except ValueError:
        decoded = None
    if isinstance(decoded, dict) and len(decoded) == 1:
        ((name, attributes),) = decoded.items()
        return str(name), dict(attributes) if isinstance(attributes, Mapping) else {}
    return str(value), {}


def _zipkin_span(doc: Mapping[str, Any]) -> Span:
    endpoint = doc.get("localEndpoint") or {}
    return Span(
        trace_id=_ident(doc.get("traceId")),
        span_id=_ident(doc.get("id")),
        parent_id=_ident(doc.get("parentId")) or None,
        name=str(doc.get("name", "")),
        kind=str(doc.get("kind") or "INTERNAL"),
        service=str(endpoint.get("serviceName") or "unknown_service"),
        attributes=dict(doc.get("tags") or {}),
        events=[_zipkin_event(a) for a in doc.get("annotations") or [] if isinstance(a, Mapping)],
    )


@dataclass
class Loaded:
    """The spans read from one file, in which format, and how much of it was not spans."""

    spans: list[Span]
    format: str
    skipped: int = 0


def _from_text(text: str) -> Loaded:
    spans: list[Span] = []
    formats: set[str] = set()
    skipped = 0
    for doc in _documents(text):
        if not isinstance(doc, Mapping):
            skipped += 1
        elif "resourceSpans" in doc:
            spans.extend(_otlp_spans(doc))
            formats.add("OTLP JSON")
        elif "context" in doc and "name" in doc:
            spans.append(_console_span(doc))
            formats.add("ConsoleSpanExporter")
        elif "traceId" in doc and "id" in doc:
            spans.append(_zipkin_span(doc))
            formats.add("Zipkin v2 JSON")
        else:
            skipped += 1
    return Loaded(spans, " + ".join(sorted(formats)) or "text", skipped)


def _is_text(data: bytes) -> bool:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not any(ord(c) < 32 and c not in "\t\r\n" for c in text)


def read(data: bytes) -> Loaded:
    """The spans in an export file, its format recognised from the content: OTLP JSON, OTLP
    protobuf (one request, or length-delimited requests), Zipkin v2 JSON, or the console
    exporter's output (lines that are not spans, such as an app's banner, are skipped)."""
    if _is_text(data):
        return _from_text(data.decode("utf-8"))
    from otel_identity import _otlp_proto

    spans = [span for req in _otlp_proto.requests(data) for span in _otlp_spans(req)]
    return Loaded(spans, "OTLP protobuf")


def load(text: str) -> list[Span]:
    """The spans in ``text`` (any of the text formats ``read`` knows)."""
    return _from_text(text).spans


NO_IDENTITY = "(no identity)"  # the tenant row of work that never had an identity


@dataclass
class Report:
    rows: dict[tuple[str, str], Row]
    lost: list[tuple[Span, Span | None]]
    spans: int
    # tenant (or NO_IDENTITY) -> hops of its traces; a hop's tenant is its trace's
    tenants: dict[str, Row] = field(default_factory=dict)
    # (calling service, receiving service) -> the receiving hops across that edge
    edges: dict[tuple[str, str], Row] = field(default_factory=dict)
    skipped: int = 0
    format: str = ""


def _count(row: Row, span: Span, missing: Any, rejected: Any) -> None:
    row.hops += 1
    if span.has_identity:
        row.present += 1
    if missing is not None:
        row.missing += 1
    if rejected is not None:
        row.rejected += 1
        row.reasons[str(rejected.get(names.ATTR_REJECT_REASON, "?"))] += 1


def _trace_tenants(spans: list[Span]) -> dict[str, str]:
    tenants: dict[str, str] = {}
    for span in spans:
        tenant = span.attributes.get(names.TENANT_ID)
        if tenant is not None and span.trace_id not in tenants:
            tenants[span.trace_id] = str(tenant)
    return tenants


def analyse(spans: Iterable[Span]) -> Report:
    spans = list(spans)
    by_id = {(s.trace_id, s.span_id): s for s in spans}
    tenant_of = _trace_tenants(spans)
    report = Report({}, [], len(spans))
    for span in spans:
        missing = span.event(names.EVENT_MISSING)
        rejected = span.event(names.EVENT_REJECTED)
        receiving = span.kind in _RECEIVING_KINDS or missing is not None or rejected is not None
        hop = span.hop
        if not receiving or hop is None:
            continue
        _count(report.rows.setdefault((span.service, hop), Row()), span, missing, rejected)
        tenant = tenant_of.get(span.trace_id, NO_IDENTITY)
        _count(report.tenants.setdefault(tenant, Row()), span, missing, rejected)
        parent = by_id.get((span.trace_id, span.parent_id or ""))
        if parent is not None and parent.service != span.service:
            edge = report.edges.setdefault((parent.service, span.service), Row())
            _count(edge, span, missing, rejected)
        if not span.has_identity and (missing is not None or rejected is not None):
            report.lost.append((span, parent))
    return report


def _table(header: tuple[str, ...], body: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in [header, *body]
    ]
    lines.insert(1, "-" * len(lines[0]))
    return lines


def _reasons(row: Row) -> str:
    if not row.reasons:
        return ""
    return " (" + ", ".join(f"{k}={v}" for k, v in sorted(row.reasons.items())) + ")"


def coverage_rows(report: Report) -> list[tuple[str, ...]]:
    """The coverage table's rows as text cells (the terminal table and the page show these)."""
    return [
        (
            service,
            hop,
            str(row.hops),
            str(row.present),
            str(row.missing),
            str(row.rejected) + _reasons(row),
            f"{row.coverage:.0%}",
        )
        for (service, hop), row in sorted(report.rows.items())
    ]


def tenant_rows(report: Report) -> list[tuple[str, ...]]:
    """Per tenant: its hops, and how many ran without identity (NO_IDENTITY last)."""
    order = sorted(report.tenants, key=lambda t: (t == NO_IDENTITY, t))
    return [
        (
            tenant,
            str(report.tenants[tenant].hops),
            str(report.tenants[tenant].hops - report.tenants[tenant].present),
        )
        for tenant in order
    ]


COVERAGE_HEADER = ("service", "hop", "hops", "identity", "missing", "rejected", "coverage")
TENANT_HEADER = ("tenant", "hops", "without identity")


def _came_from(parent: Span | None) -> str:
    if parent is None:
        return "(no parent in the file)"
    had = " which had identity" if parent.has_identity else ""
    return f"after {parent.service}/{parent.name!r}{had}"


def render_text(report: Report) -> str:
    lines = _table(COVERAGE_HEADER, coverage_rows(report))
    if report.tenants:
        lines += ["", *_table(TENANT_HEADER, tenant_rows(report))]
    lines.append("")
    skipped = f"; {report.skipped} non-span line(s) skipped" if report.skipped else ""
    lines.append(f"{report.spans} spans read{skipped}; identity lost on {len(report.lost)} hop(s)")
    lines += [
        f"  {span.service}/{span.name!r} [{span.hop}] {_came_from(parent)}"
        for span, parent in report.lost
    ]
    return "\n".join(lines) + "\n"
