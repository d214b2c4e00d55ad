"""The OTLP protobuf reader: the same values as the protobuf library, and only ValueError on
any input (it reads files people hand it)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from otel_identity import _otlp_proto

values = st.one_of(
    st.text().map(lambda v: ("stringValue", v)),
    st.booleans().map(lambda v: ("boolValue", v)),
    st.integers(-(2**63), 2**63 - 1).map(lambda v: ("intValue", v)),
    st.floats(allow_nan=False).map(lambda v: ("doubleValue", v)),
)


FIELDS = {"stringValue": "string_value", "boolValue": "bool_value", "intValue": "int_value",
          "doubleValue": "double_value"}  # fmt: skip


def any_value(kind: str, value: object) -> AnyValue:
    return AnyValue(**{FIELDS[kind]: value})


@given(
    name=st.text(),
    kind=st.integers(0, 5),
    ids=st.tuples(st.binary(min_size=16, max_size=16), st.binary(min_size=8, max_size=8)),
    attributes=st.dictionaries(st.text(), values, max_size=4),
    event=st.text(),
)
def test_decodes_what_the_protobuf_library_encodes(
    name: str, kind: int, ids: tuple[bytes, bytes], attributes: dict[str, tuple[str, object]],
    event: str,
) -> None:  # fmt: skip
    span = Span(trace_id=ids[0], span_id=ids[1], name=name, kind=kind,  # type: ignore[arg-type]
                attributes=[KeyValue(key=k, value=any_value(*v)) for k, v in attributes.items()],
                events=[Span.Event(name=event)])  # fmt: skip
    body = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])]
    ).SerializeToString()
    for data in (body, bytes([len(body)]) + body if len(body) < 128 else body):
        (request,) = _otlp_proto.requests(data)
        (decoded,) = request["resourceSpans"][0]["scopeSpans"][0]["spans"]
        assert decoded.get("name", "") == name
        assert decoded.get("kind", 0) == kind
        assert decoded["traceId"] == ids[0].hex() and decoded["spanId"] == ids[1].hex()
        got = {a["key"]: a["value"] for a in decoded.get("attributes", [])}
        assert got == {k: {kind_: v} for k, (kind_, v) in attributes.items()}
        assert decoded["events"] == [{"name": event}] if event else [{}]


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_value_error(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        _otlp_proto.requests(data)


def test_truncated_input_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="truncated"):
        _otlp_proto.request(b"\x0a\x10\x12")
