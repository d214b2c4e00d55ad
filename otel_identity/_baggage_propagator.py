"""otel-identity's own W3C baggage propagator, and its place in the global textmap.

    OTEL_PROPAGATORS=tracecontext,identity_baggage      # by name (entry point), or:
    IdentityInstrumentor().instrument()                 # takes the place of OpenTelemetry's

It serves every baggage member, not only identity, with the codec of ``_baggage``: a strict
parse linear in the header's size (keys never percent-decoded, control characters refused,
limits in bytes that never drop identity members) and an exact encoding that OpenTelemetry
Python, OpenTelemetry JS and a plain W3C decoder all read back exactly. ``extract`` also
leaves the parse's facts (ambiguous, refused, oversize) in the context, for ``parsed_of``:
the receiving hop rejects identity on them.

Where a transport's server hook announced its receiving hop (``_arriving.announce``) before
OpenTelemetry's own server instrumentation extracts the request, ``extract`` decides that hop
right here, inside OpenTelemetry's pass: see ``_arriving``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, Protocol, cast

from opentelemetry import propagate
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context, create_key, get_current
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)

from otel_identity import _baggage, _config, _memo, _telemetry
from otel_identity._internals import BAGGAGE_KEY, composite_steps

_PARSED_KEY = create_key("otel_identity.baggage_parsed")


class Announced(Protocol):
    """A receiving hop announced for the next extract (``_arriving.Arriving``)."""

    open: bool  # until one extract decides the hop

    def decide(self, base: Context, carrier: Any, getter: Getter[Any]) -> Context:
        """``base`` as the hop's context, its baggage read from the request."""


# The receiving hop the next extract in this context decides, announced by a transport's
# server hook before OpenTelemetry's own extract runs (here, so the step can read it; the
# marker itself lives with the receiving side, in ``_arriving``).
arriving: ContextVar[Announced | None] = ContextVar("otel_identity.arriving", default=None)


@_memo.per_settings
def keep_keys_of(settings: _config.Settings) -> frozenset[str]:
    """The members the W3C limits never drop under ``settings``: the identity keys and the
    signature."""
    return frozenset((*settings.identity_keys, settings.sig_key))


def keep_keys() -> frozenset[str]:
    """``keep_keys_of`` the settings in force."""
    return keep_keys_of(_config.current or _config.get_settings())


class IdentityBaggagePropagator(TextMapPropagator):
    """The W3C ``baggage`` header, parsed strictly and encoded exactly (every member)."""

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        """``context`` with the header's members merged into its baggage, as OpenTelemetry's
        propagator does, and the parse's facts kept for ``parsed_of``; with a receiving hop
        announced and still open, that hop's context (``_arriving``). Never raises."""
        ctx = context if context is not None else get_current()
        try:
            hop = arriving.get()
            if hop is not None and hop.open:
                return hop.decide(ctx, carrier, getter)
            values = getter.get(carrier, _baggage.HEADER)
            if not values:
                return ctx
            keep = keep_keys()
            return with_members(ctx, _baggage.parse(values, keep), keep)
        except Exception:  # noqa: BLE001 - a propagator never breaks the request path
            _telemetry.log_internal_error("baggage extract")
            return ctx

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        """Write the context's baggage as one header (nothing when there is none)."""
        ctx = context if context is not None else get_current()
        try:
            baggage: Mapping[str, object] | None = ctx.get(BAGGAGE_KEY)  # type: ignore[assignment]
            header = _baggage.encode(baggage, keep_keys()) if baggage else None
        except Exception:  # noqa: BLE001
            _telemetry.log_internal_error("baggage inject")
            return
        if header:
            setter.set(carrier, _baggage.HEADER, header)

    @property
    def fields(self) -> set[str]:
        return {_baggage.HEADER}


def with_members(ctx: Context, parsed: _baggage.Parsed, keep: frozenset[str]) -> Context:
    """``ctx`` with ``parsed``'s members over its baggage, and ``parsed`` kept for ``parsed_of``.

    When the ``keep`` (identity) members were ambiguous, refused or oversize, none of them is
    left in the baggage, not even one from ``ctx``: the receiving hop rejects the identity, and
    code reading baggage directly must not see half of it."""
    values = dict(ctx)
    existing = cast("Mapping[str, object] | None", values.get(BAGGAGE_KEY))
    if parsed.verdict(keep) is not None:
        merged = {k: v for k, v in {**(existing or {}), **parsed.members}.items() if k not in keep}
        values[BAGGAGE_KEY] = merged
    elif parsed.members:
        values[BAGGAGE_KEY] = {**existing, **parsed.members} if existing else parsed.members
    values[_PARSED_KEY] = parsed
    return Context(values)


def parsed_of(context: Context | None = None) -> _baggage.Parsed | None:
    """What ``IdentityBaggagePropagator.extract`` found in the header it read into ``context``
    (None when it read none)."""
    ctx = context if context is not None else get_current()
    return cast("_baggage.Parsed | None", ctx.get(_PARSED_KEY))


# --- its place in the global textmap ------------------------------------------------------


def is_baggage_step(part: object) -> bool:
    """Whether ``part`` is a W3C baggage step whose work our codec does (ours or OTel's)."""
    return type(part) is IdentityBaggagePropagator or type(part) is W3CBaggagePropagator


def replaced(propagator: TextMapPropagator) -> TextMapPropagator:
    """``propagator`` as ``install`` would leave it."""
    return _replaced(propagator) or propagator


def _replaced(propagator: TextMapPropagator) -> TextMapPropagator | None:
    """``propagator`` with OpenTelemetry's baggage step(s) replaced by ours; None if none."""
    if type(propagator) is W3CBaggagePropagator:
        return IdentityBaggagePropagator()
    if type(propagator) is not CompositePropagator:
        return None
    parts = list(composite_steps(propagator) or ())
    new = [_replaced(part) for part in parts]
    if all(part is None for part in new):
        return None
    return CompositePropagator([n or p for n, p in zip(new, parts, strict=True)])


# (the global textmap before install, the one install set)
_installed: tuple[TextMapPropagator, TextMapPropagator] | None = None


def install() -> bool:
    """Put ours in place of OpenTelemetry's baggage step in the global textmap (idempotent).

    Returns whether ours is in place; a textmap without a baggage step is left alone."""
    global _installed
    current = propagate.get_global_textmap()
    if _installed is not None and _installed[1] is current:
        return True
    new = _replaced(current)
    if new is None:
        return baggage_step_status(current) == "ours"
    _installed = (current, new)
    propagate.set_global_textmap(new)
    return True


def uninstall() -> None:
    """Put the textmap ``install`` replaced back, unless someone has replaced ours since."""
    global _installed
    if _installed is not None and propagate.get_global_textmap() is _installed[1]:
        propagate.set_global_textmap(_installed[0])
    _installed = None


# (a global textmap found displacing ours, whether it does): asked on paths that read identity
# from baggage otel-identity did not parse, so the answer is kept for the textmap it is about.
_displaced: tuple[object, bool] = (None, False)


def displaced() -> bool:
    """Whether the global textmap was replaced, after ``install`` put ours in place, by one
    whose baggage step is not ours (someone set OpenTelemetry's back, say).

    Identity then fails closed wherever it would come from or go through that step: baggage
    parsed by another parser (look-alike keys, stripped values) is not admitted, and identity
    does not leave through transports whose header that step wrote. Logged once; ``otel-identity
    doctor`` explains the statuses."""
    global _displaced
    installed = _installed
    if installed is None:
        return False
    textmap = propagate.get_global_textmap()
    if textmap is installed[1]:
        return False
    known, answer = _displaced
    if known is not textmap:
        answer = baggage_step_status(textmap) != "ours"
        _displaced = (textmap, answer)
        if answer:
            _telemetry.log_once(
                logging.WARNING,
                ("baggage_step_displaced",),
                "otel-identity: the global textmap was replaced after otel-identity installed its"
                " baggage step, and its baggage step is not otel-identity's: identity fails"
                " closed (none accepted from baggage otel-identity did not parse, none sent"
                " through that step); set OTEL_PROPAGATORS=tracecontext,identity_baggage or"
                " leave the textmap to IdentityInstrumentor (otel-identity doctor)",
            )
    return answer


def _kinds(propagator: object) -> set[str]:
    if type(propagator) is IdentityBaggagePropagator:
        return {"ours"}
    if type(propagator) is W3CBaggagePropagator:
        return {"opentelemetry"}
    if type(propagator) is CompositePropagator:
        found: set[str] = set()
        for part in composite_steps(propagator) or ():
            found |= _kinds(part)
        return found
    try:
        fields = set(cast("TextMapPropagator", propagator).fields)
    except Exception:  # noqa: BLE001 - a propagator of unknown make: say so
        return {"opaque"}
    return (
        {"opaque"} if isinstance(propagator, CompositePropagator) or "baggage" in fields else set()
    )


def baggage_step_status(propagator: TextMapPropagator | None = None) -> str:
    """Who does the W3C baggage step of the global textmap (or of ``propagator``), for doctor:

    ``ours`` (``IdentityBaggagePropagator``), ``opentelemetry`` (its ``W3CBaggagePropagator``,
    whose parse the identity path does not rely on), ``opaque`` (a propagator of unknown make
    reads the header) or ``none`` (no baggage step: identity does not cross processes)."""
    kinds = _kinds(propagator if propagator is not None else propagate.get_global_textmap())
    for kind in ("opentelemetry", "opaque", "ours"):
        if kind in kinds:
            return kind
    return "none"
