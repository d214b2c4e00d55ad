"""Running the global propagator, with the W3C baggage step done by our codec.

Every hop runs the global propagator (so ``OTEL_PROPAGATORS`` is honoured), but the W3C
baggage step, whether ours (``IdentityBaggagePropagator``) or OpenTelemetry's
(``W3CBaggagePropagator``, configured explicitly), is done by ``_baggage``: a strict, linear
parse whose facts (ambiguous, refused, oversize) decide the hop, and an exact encoding, both
memoized. A propagator of unknown shape runs as it is, but identity members are then taken
only from our own parse of the header (fail closed: its parse may read look-alike keys).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from opentelemetry import propagate
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import CarrierT, Getter, Setter, TextMapPropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from otel_identity import _baggage
from otel_identity._baggage_propagator import (
    IdentityBaggagePropagator,
    is_baggage_step,
    keep_keys,
    with_members,
)
from otel_identity._internals import BAGGAGE_KEY, composite_steps

_HEADER = _baggage.HEADER
_KNOWN = frozenset({TraceContextTextMapPropagator, W3CBaggagePropagator, IdentityBaggagePropagator})


def steps(propagator: TextMapPropagator) -> tuple[TextMapPropagator, ...] | None:
    """The steps of the global propagator when we know its shape, else None (opaque)."""
    if type(propagator) is CompositePropagator:
        return composite_steps(propagator)
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
        if kinds <= _KNOWN and len(kinds) == len(parts):
            answer = any(is_baggage_step(part) for part in parts)
    shape = (propagator, answer)
    return answer


def first(values: Any) -> str | None:
    """The first text value a getter returned (a getter may return a string or a list)."""
    if type(values) is list:  # what most getters return
        value = values[0] if values else None
    elif not values or isinstance(values, str):
        return values or None
    else:
        value = next(iter(values), None)
    return value if isinstance(value, str) else None


def joined(values: Any) -> str | None:
    """The baggage list a getter returned: several header values are one list."""
    if type(values) is str:
        return values or None
    if not values:
        return None
    if type(values) is list and len(values) == 1:  # the usual case: one header line
        only = values[0]
        return only if isinstance(only, str) and only else None
    texts = [value for value in values if isinstance(value, str)]
    return ",".join(texts) or None


def extract(
    carrier: CarrierT, getter: Getter[CarrierT], keep: frozenset[str]
) -> tuple[Context, _baggage.Parsed]:
    """The sender's context from ``carrier`` (on an empty base), and what its baggage held."""
    propagator = propagate.get_global_textmap()
    parts = steps(propagator)
    if parts is None:
        return _extract_opaque(propagator, carrier, getter, keep)
    ctx = Context()
    parsed = _baggage.EMPTY
    for part in parts:
        if not is_baggage_step(part):
            ctx = part.extract(carrier, context=ctx, getter=getter)
            continue
        header = joined(getter.get(carrier, _HEADER))
        if header:
            parsed = _baggage.parse(header, keep)
            ctx = with_members(ctx, parsed, keep)
    return ctx, parsed


def _extract_opaque(
    propagator: TextMapPropagator, carrier: CarrierT, getter: Getter[CarrierT], keep: frozenset[str]
) -> tuple[Context, _baggage.Parsed]:
    """A propagator of unknown shape: it runs as it is, and identity members come only from
    our own parse of the header (what it read for them is dropped)."""
    ctx = propagator.extract(carrier, context=Context(), getter=getter)
    header = joined(getter.get(carrier, _HEADER))
    parsed = _baggage.parse(header, keep) if header else _baggage.EMPTY
    baggage = cast("Mapping[str, object]", ctx.get(BAGGAGE_KEY) or {})
    ours = {} if parsed.verdict(keep) else parsed.members
    if keep.isdisjoint(baggage) and keep.isdisjoint(ours):
        return ctx, parsed
    values = dict(ctx)
    merged = {k: v for k, v in baggage.items() if k not in keep}
    merged.update((k, v) for k, v in ours.items() if k in keep)
    values[BAGGAGE_KEY] = merged
    return Context(values), parsed


def inject(carrier: CarrierT, ctx: Context, setter: Setter[CarrierT]) -> None:
    """Run the global propagator's inject, the W3C baggage step by our codec."""
    propagator = propagate.get_global_textmap()
    parts = steps(propagator)
    if parts is None:
        propagator.inject(carrier, context=ctx, setter=setter)
        return
    for part in parts:
        if not is_baggage_step(part):
            part.inject(carrier, context=ctx, setter=setter)
            continue
        baggage = cast("Mapping[str, object] | None", ctx.get(BAGGAGE_KEY))
        if baggage:
            header = _baggage.encode(baggage, keep_keys())
            if header:
                setter.set(carrier, _HEADER, header)
