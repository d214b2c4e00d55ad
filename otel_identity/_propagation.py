"""Running the global propagator, with the W3C baggage step memoized.

Every hop runs the global propagator (so ``OTEL_PROPAGATORS`` is honoured), but the W3C
baggage step is a pure function of its input: the same baggage always gives the same header,
and the same header always decodes to the same members. Identity baggage repeats across the
requests of a session and across the fan-out of one request, so the propagator's own output
is kept in a bounded table: a repeated header or baggage costs a dict lookup instead of a
regex split, validation and percent-coding per member. Nothing here encodes or decodes a
header by hand: a miss calls OpenTelemetry's ``W3CBaggagePropagator`` itself.

The extract side also applies the W3C limits the propagator does not: an oversize header is
cut to fit (identity members kept, by splitting on the list separator only) instead of being
dropped whole, and more than 64 members are trimmed after decoding.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from opentelemetry import propagate
from opentelemetry.baggage import _BAGGAGE_KEY
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import CarrierT, Getter, Setter, TextMapPropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from otel_identity import _codec, _memo

_HEADER = "baggage"
_W3C = W3CBaggagePropagator()
# (header, members kept first when trimming) -> (members, oversize)
_decoded: dict[tuple[str, frozenset[str]], tuple[dict[str, object], bool]] = {}
_encoded: dict[tuple[tuple[str, object], ...], str | None] = {}


def steps(propagator: TextMapPropagator) -> tuple[TextMapPropagator, ...] | None:
    """The steps of the global propagator when we know its shape, else None (opaque)."""
    if type(propagator) is CompositePropagator:
        return tuple(cast("Any", propagator)._propagators)
    if isinstance(propagator, CompositePropagator):
        return None  # a subclass may combine its steps its own way
    return (propagator,)


# (the last propagator baggage_only was asked about, its answer)
shape: tuple[object, bool | None] = (None, None)


def baggage_only(propagator: TextMapPropagator) -> bool | None:
    """Whether all ``propagator`` reads, besides the W3C trace context, is the W3C baggage
    header (True), or nothing at all (False); None for any other propagator.

    A receiving hop whose span an instrumentation already started does not need the sender's
    trace context: for the first two shapes (the default ``tracecontext,baggage`` is the
    first), the baggage header alone then decides the hop. Remembered for the last
    propagator asked about.
    """
    global shape
    known, answer = shape
    if known is propagator:
        return answer
    parts = steps(propagator)
    answer = None
    if parts is not None:
        kinds = {type(part) for part in parts}
        if kinds <= {TraceContextTextMapPropagator, W3CBaggagePropagator} and len(kinds) == len(
            parts
        ):
            answer = W3CBaggagePropagator in kinds
    shape = (propagator, answer)
    return answer


def trim_header(header: str, keep: frozenset[str]) -> tuple[str, bool]:
    """Cut a baggage header to the W3C minimums, members named in ``keep`` first.

    Returns the header and whether the kept members alone did not fit (they are then dropped
    too and the hop is rejected as ``oversize``). Members never contain a raw comma, so the
    list separator is the only thing looked at; decoding stays with the propagator.
    """
    if len(header) <= _codec.MAX_BYTES and header.count(",") < _codec.MAX_MEMBERS:
        return header, False
    first: list[str] = []
    rest: list[str] = []
    for raw in header.split(","):
        member = raw.strip(" \t")
        (first if member.split("=", 1)[0].rstrip(" \t") in keep else rest).append(member)
    size = sum(len(m.encode("utf-8", "replace")) + 1 for m in first)
    oversize = size > _codec.MAX_BYTES
    if oversize:
        first, size = [], 0
    for member in rest:
        member_size = len(member.encode("utf-8", "replace")) + 1
        if len(first) < _codec.MAX_MEMBERS and size + member_size <= _codec.MAX_BYTES:
            first.append(member)
            size += member_size
    return ",".join(first), oversize


def decode_baggage(header: str, keep: frozenset[str]) -> tuple[dict[str, object], bool]:
    """Members of a baggage header, as OpenTelemetry's propagator decodes them (memoized)."""
    cached = _decoded.get((header, keep))
    if cached is not None:
        return cached
    trimmed, oversize = trim_header(header, keep)
    ctx = _W3C.extract({_HEADER: trimmed}, context=Context())
    members = dict(cast("Mapping[str, object]", ctx.get(_BAGGAGE_KEY) or {}))
    if len(members) > _codec.MAX_MEMBERS:
        members = cast("dict[str, object]", _codec.fit(members, keep))
    result = (members, oversize)
    _memo.remember(_decoded, (header, keep), result)
    return result


class _TrimmingGetter(Getter[CarrierT]):
    """For an opaque global propagator: hands it a baggage header within the limits."""

    def __init__(self, inner: Getter[CarrierT], keep: frozenset[str]) -> None:
        self.inner = inner
        self.keep = keep
        self.oversize = False

    def get(self, carrier: CarrierT, key: str) -> list[str] | None:
        values = self.inner.get(carrier, key)
        if key != _HEADER or not values or not isinstance(values[0], str):
            return values
        header, oversize = trim_header(values[0], self.keep)
        self.oversize = self.oversize or oversize
        return [header]

    def keys(self, carrier: CarrierT) -> list[str]:
        return self.inner.keys(carrier)


def first(values: Any) -> str | None:
    """The first text value a getter returned (a getter may return a string or a list)."""
    if type(values) is list:  # what most getters return
        value = values[0] if values else None
    elif not values or isinstance(values, str):
        return values or None
    else:
        value = next(iter(values), None)
    return value if isinstance(value, str) else None


def extract(
    carrier: CarrierT, getter: Getter[CarrierT], keep: frozenset[str]
) -> tuple[Context, bool]:
    """The sender's context from ``carrier`` (on an empty base), and whether it was oversize."""
    propagator = propagate.get_global_textmap()
    parts = steps(propagator)
    if parts is None:
        trimming = _TrimmingGetter(getter, keep)
        return propagator.extract(carrier, context=Context(), getter=trimming), trimming.oversize
    ctx = Context()
    oversize = False
    for part in parts:
        if type(part) is not W3CBaggagePropagator:
            ctx = part.extract(carrier, context=ctx, getter=getter)
            continue
        header = first(getter.get(carrier, _HEADER))
        if not header:
            continue
        members, too_big = decode_baggage(header, keep)
        oversize = oversize or too_big
        if members:
            existing = cast("Mapping[str, object] | None", ctx.get(_BAGGAGE_KEY))
            values = dict(ctx)
            values[_BAGGAGE_KEY] = {**existing, **members} if existing else members
            ctx = Context(values)
    return ctx, oversize


def _header_for(baggage: Mapping[str, object]) -> str | None:
    try:
        key = tuple(baggage.items())
        cached = _encoded.get(key, _MISSING)
    except TypeError:  # an unhashable baggage value: let the propagator do it every time
        key, cached = None, _MISSING
    if cached is not _MISSING:
        return cast("str | None", cached)
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=Context({_BAGGAGE_KEY: dict(baggage)}))
    header = carrier.get(_HEADER)
    if key is not None:
        _memo.remember(_encoded, key, header)
    return header


_MISSING = object()


def inject(carrier: CarrierT, ctx: Context, setter: Setter[CarrierT]) -> None:
    """Run the global propagator's inject, the W3C baggage step from the memo."""
    propagator = propagate.get_global_textmap()
    parts = steps(propagator)
    if parts is None:
        propagator.inject(carrier, context=ctx, setter=setter)
        return
    for part in parts:
        if type(part) is not W3CBaggagePropagator:
            part.inject(carrier, context=ctx, setter=setter)
            continue
        baggage = cast("Mapping[str, object] | None", ctx.get(_BAGGAGE_KEY))
        if baggage:
            header = _header_for(baggage)
            if header:
                setter.set(carrier, _HEADER, header)
