"""Read OTLP protobuf trace exports (``ExportTraceServiceRequest``) without a protobuf library.

The report reads what OpenTelemetry's OTLP/HTTP exporter sends: one request body per file, or
many, each preceded by its length as a varint (protobuf's length-delimited stream). Only the
fields the report needs are decoded; everything else is skipped by its wire type. The result
has the shape of OTLP JSON (camelCase keys, hex ids), so one reader serves both::

    for request in requests(data):
        for resource_spans in request["resourceSpans"]: ...

Malformed input raises ``ValueError`` (never reads out of bounds, never loops).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import Any

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _varint(data: bytes, index: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if index >= len(data) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = data[index]
        index += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, index
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of each field of one message; a LEN value is bytes."""
    index = 0
    while index < len(data):
        key, index = _varint(data, index)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        value: Any
        if wire == _VARINT:
            value, index = _varint(data, index)
        elif wire == _I64:
            value, index = data[index : index + 8], index + 8
        elif wire == _I32:
            value, index = data[index : index + 4], index + 4
        elif wire == _LEN:
            size, index = _varint(data, index)
            value, index = data[index : index + size], index + size
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if index > len(data):
            raise ValueError("truncated field")
        yield number, wire, value


def _message(
    data: bytes, schema: dict[int, tuple[str, Callable[[Any], Any], bool]]
) -> dict[str, Any]:
    """Decode the fields named in ``schema`` (number -> (key, decode, repeated))."""
    out: dict[str, Any] = {}
    for number, wire, value in _fields(data):
        entry = schema.get(number)
        if entry is None:
            continue
        key, decode, repeated = entry
        if decode is not _int and wire != _LEN:
            raise ValueError(f"field {key} has wire type {wire}")
        if repeated:
            out.setdefault(key, []).append(decode(value))
        else:
            out[key] = decode(value)
    return out


def _int(value: Any) -> int:
    if not isinstance(value, int):  # a length-delimited field where a varint belongs
        raise ValueError("expected a varint")  # noqa: TRY004 - malformed input, one error type
    return value


def _text(value: bytes) -> str:
    return value.decode("utf-8", errors="replace")


def _hex(value: bytes) -> str:
    return value.hex()


def _any_value(data: bytes) -> dict[str, Any]:
    for number, wire, value in _fields(data):
        if number == 1 and wire == _LEN:
            return {"stringValue": _text(value)}
        if number == 2 and wire == _VARINT:
            return {"boolValue": bool(value)}
        if number == 3 and wire == _VARINT:
            return {"intValue": value - (1 << 64) if value >= 1 << 63 else value}
        if number == 4 and wire == _I64 and len(value) == 8:
            return {"doubleValue": struct.unpack("<d", value)[0]}
        if number == 5 and wire == _LEN:
            return {"arrayValue": _message(value, {1: ("values", _any_value, True)})}
    return {}


def _key_value(data: bytes) -> dict[str, Any]:
    # proto3 leaves out fields at their default: an empty key is no key at all on the wire
    return {"key": "", "value": {}} | _message(
        data, {1: ("key", _text, False), 2: ("value", _any_value, False)}
    )


_ATTRIBUTES = ("attributes", _key_value, True)


def _event(data: bytes) -> dict[str, Any]:
    return _message(data, {2: ("name", _text, False), 3: _ATTRIBUTES})


def _span(data: bytes) -> dict[str, Any]:
    return _message(
        data,
        {
            1: ("traceId", _hex, False),
            2: ("spanId", _hex, False),
            4: ("parentSpanId", _hex, False),
            5: ("name", _text, False),
            6: ("kind", _int, False),
            9: _ATTRIBUTES,
            11: ("events", _event, True),
        },
    )


def _scope_spans(data: bytes) -> dict[str, Any]:
    return _message(data, {2: ("spans", _span, True)})


def _resource_spans(data: bytes) -> dict[str, Any]:
    return _message(
        data,
        {
            1: ("resource", lambda v: _message(v, {1: _ATTRIBUTES}), False),
            2: ("scopeSpans", _scope_spans, True),
        },
    )


def request(data: bytes) -> dict[str, Any]:
    """One ``ExportTraceServiceRequest`` body, as OTLP JSON would spell it."""
    decoded = _message(data, {1: ("resourceSpans", _resource_spans, True)})
    decoded.setdefault("resourceSpans", [])
    return decoded


def _delimited(data: bytes) -> list[dict[str, Any]]:
    found = []
    index = 0
    while index < len(data):
        size, index = _varint(data, index)
        if size == 0 or index + size > len(data):
            raise ValueError("not a length-delimited stream")
        found.append(request(data[index : index + size]))
        index += size
    return found


def requests(data: bytes) -> list[dict[str, Any]]:
    """The requests in ``data``: a length-delimited stream of them, or a single one."""
    try:
        stream = _delimited(data)
    except ValueError:
        stream = []
    if stream and all(r["resourceSpans"] for r in stream):
        return stream
    return [request(data)]
