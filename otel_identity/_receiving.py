"""The receiving side of a hop: what arrived, what policy admits, the hop's context.

    with oi.continue_from(headers, hop="queue.consume"):        # extract, attach, detach
        handle(message)                                         # identity and current_user set

Every receiving hop goes through ``extract`` (or ``_handoff.receive`` for an in-process
hand-off), the one place where inbound policy, limits and hop accounting happen; transports
only supply a getter. A server hop announced for OpenTelemetry's own extract (``_arriving``)
is decided by the same steps: ``arrival_for`` (what arrived and what policy admits),
``settled`` (its state, events and count) and ``arrived_context``. Propagation always goes
through the global propagator, so ``OTEL_PROPAGATORS`` is honoured; nothing here parses a
header value. What one baggage header means on one kind of hop (``Arrival``) is remembered,
so the same header on the next request of a session is a dict lookup.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import CarrierT, Getter, default_getter
from opentelemetry.trace import NonRecordingSpan, SpanKind

from otel_identity import (
    _baggage,
    _codec,
    _config,
    _counts,
    _keys,
    _memo,
    _policy,
    _propagation,
    _signing,
    _telemetry,
    names,
)
from otel_identity._baggage_propagator import keep_keys_of
from otel_identity._errors import IdentityRejectedError, MissingIdentityError
from otel_identity._handoff import hop_state
from otel_identity._hop_state import HopState, missing_event, quiet_state
from otel_identity._identity import Identity
from otel_identity._internals import BAGGAGE_KEY, SPAN_KEY, is_span_of_kind
from otel_identity._runtime import attached, current_context
from otel_identity._state import (
    ANNOUNCEMENT_KEY,
    HOP_KEY,
    SLOT_KEY,
    STATE_KEY,
    IdentityState,
    UserSlot,
    all_identity_keys,
    identity_of,
    without_identity,
)

# The span kind an instrumentation gives the receiving side of each hop kind.
_HOP_SPAN_KIND = {
    names.HOP_HTTP_SERVER: SpanKind.SERVER,
    names.HOP_GRPC_SERVER: SpanKind.SERVER,
    names.HOP_QUEUE_CONSUME: SpanKind.CONSUMER,
}
_SERVER_HOPS = frozenset(hop for hop, kind in _HOP_SPAN_KIND.items() if kind is SpanKind.SERVER)
_NO_BAGGAGE: Mapping[str, object] = {}


class Arrival:
    """What one baggage arriving on one kind of hop means under one settings object.

    A pure function of those three, and under ``verify`` of the key set and the clock too (see
    ``holds``), so the same header on the next request of a session is a dict lookup:
    decoding, policy, verification, the identity state and its span attributes are shared by
    every hop it arrives on. Never mutated once built.
    """

    __slots__ = (
        "entries",
        "events",
        "generation",
        "if_missing",
        "outcome",
        "present",
        "reason",
        "settings",
        "state",
        "until",
    )

    def __init__(
        self,
        baggage: Mapping[str, object],
        wire: _baggage.Parsed,
        hop: str,
        settings: _config.Settings,
    ) -> None:
        self.settings = settings
        raw = _codec.raw_values(baggage, settings.identity_keys)
        policy = _policy.policy_for(hop, settings)
        # The header's own verdict first: identity members that were ambiguous, refused or
        # did not fit reject the hop, whatever the rest of them says.
        reason = wire.verdict(keep_keys_of(settings))
        # The key set a verdict is judged by, read first: a reload meanwhile only ages it.
        self.generation = _keys.current_generation(settings) if policy == "verify" else None
        identity, self.until = None, _policy.FOREVER
        if reason is None:
            identity, reason, self.until = _policy.admission(baggage, raw, policy, settings)
        required = hop in settings.required_hops
        self.if_missing = (missing_event(hop, settings),) if required else ()
        self.events: tuple[tuple[str, dict[str, Any]], ...] = ()
        # The outcome, or None when it depends on the route (missing, or anonymous).
        self.outcome: str | None = None
        if reason is not None:
            baggage = self._reject(baggage, hop, reason)
        elif identity is not None:
            self.outcome = names.OUTCOME_PRESENT
        self.reason = reason
        self.state = None if identity is None else IdentityState(raw, identity, baggage)
        # A present hop has no events: its state is the hop kind's shared one.
        self.present = None if identity is None else quiet_state(hop, names.OUTCOME_PRESENT)
        # What the hop's context takes from this (its user slot and hop state are its own).
        self.entries: dict[str, object] = {
            BAGGAGE_KEY: baggage,
            STATE_KEY: self.state,
            SLOT_KEY: None,
        }

    def holds(self) -> bool:
        """Whether this is still what the header means: always, unless a signature decided
        it; then until the token expires and while the key set that judged it is in force
        (a reload, which may remove its key, makes a new one)."""
        if self.generation is None:
            return True
        return _signing.in_force(self.until, self.generation, self.settings)

    def _reject(self, baggage: Mapping[str, object], hop: str, reason: str) -> Mapping[str, object]:
        """Decide the hop rejected for ``reason``: its events, a log line, and the baggage
        without identity members that it continues with."""
        self.outcome = names.OUTCOME_REJECTED
        rejected = (names.EVENT_REJECTED, {names.ATTR_HOP: hop, names.ATTR_REJECT_REASON: reason})
        self.events = (rejected, *self.if_missing)
        _telemetry.log_limited(
            f"rejected:{hop}:{reason}",
            "otel-identity: inbound identity rejected on %s hop (%s); it was removed",
            hop,
            reason,
        )
        drop = set(all_identity_keys())
        return {k: v for k, v in baggage.items() if k not in drop}


@_memo.per_settings
def _arrivals_under(settings: _config.Settings) -> dict[tuple[str | None, str], Arrival]:
    """(baggage header, hop kind) -> what it means under ``settings`` (new settings, a new
    table)."""
    return {}


def arrival_for(header: str | None, hop: str, settings: _config.Settings) -> Arrival:
    """What the baggage ``header`` means on a ``hop`` hop under ``settings`` (remembered while
    it ``holds``: a verified one until its token expires or the key set changes)."""
    arrivals = _arrivals_under(settings)
    arrival = arrivals.get((header, hop))
    if arrival is None or not arrival.holds():
        parsed = _baggage.parse(header, keep_keys_of(settings)) if header else _baggage.EMPTY
        arrival = Arrival(parsed.members, parsed, hop, settings)
        if arrival.holds():
            _memo.remember(arrivals, (header, hop), arrival)
    return arrival


def own_span(base: Context, hop: str) -> Any:
    """The hop's own span: one an instrumentation already started for it, current in
    ``base`` (the hop keeps it: its children stay under it and it takes the hop's events).
    None when there is none, and the hop continues the sender's span."""
    span = base.get(SPAN_KEY)
    if span is None:
        return None
    if type(span) is NonRecordingSpan:
        # A span the sampler dropped has no kind. A local one (not the sender's) current where
        # a server hop arrives is the server instrumentation's own, as a sampled one would be:
        # the unsampled hop takes the same short path instead of reading the whole carrier
        # again. (A consumer keeps continuing the sender: its loop may hold any span.)
        return span if hop in _SERVER_HOPS and _is_local(span) else None
    return span if is_span_of_kind(span, _HOP_SPAN_KIND.get(hop, False)) else None


def _is_local(span: trace.Span) -> bool:
    """Whether ``span`` has valid ids made in this process (not the remote sender's)."""
    context = span.get_span_context()
    return context.is_valid and not context.is_remote


def _arrive(
    carrier: CarrierT,
    getter: Getter[CarrierT],
    base: Context,
    own: Any,
    *,
    trace_context: bool,
    hop: str,
    settings: _config.Settings,
) -> tuple[trace.Span, Arrival]:
    """The span the hop continues and what arrived. When the sender's trace context is not
    needed (the span is known) and the global propagator reads nothing but it and the W3C
    baggage header, the header alone decides the hop; else the whole propagator runs."""
    if own is not None or not trace_context:
        shape = _propagation.baggage_only(propagate.get_global_textmap())
        if shape is not None:
            header = _propagation.joined(getter.get(carrier, "baggage")) if shape else None
            span = own if own is not None else trace.get_current_span(base)
            return span, arrival_for(header, hop, settings)
    remote, parsed = _propagation.extract(carrier, getter, keep_keys_of(settings))
    span = own
    if span is None:
        sent = trace.get_current_span(remote)
        valid = trace_context and sent.get_span_context().is_valid
        span = sent if valid else trace.get_current_span(base)
    baggage: Mapping[str, object] = remote.get(BAGGAGE_KEY) or _NO_BAGGAGE  # type: ignore[assignment]
    return span, Arrival(baggage, parsed, hop, settings)


def settled(arrival: Arrival, hop: str, route: str | None, own: Any, *, account: bool) -> HopState:
    """The hop's state for ``arrival``, counted unless ``account`` is false: the one step that
    decides a hop, whether ``extract`` or OpenTelemetry's own extract (``_arriving``) runs it.

    Its events go on ``own`` (the hop's span) when it records, else wait on the state for the
    hop's first span. No span is needed: sampling never changes the count."""
    state = arrival.present  # a present hop's state is known in advance
    if state is None:
        state = _outcome_state(arrival, hop, route, own)
    if account:
        _counts.count(state.key)
    return state


def _outcome_state(arrival: Arrival, hop: str, route: str | None, own: Any) -> HopState:
    """The state of a hop that arrived without an admitted identity: its outcome (the route
    decides between missing and anonymous) and its events."""
    outcome, events = arrival.outcome, arrival.events
    if outcome is None:
        if _policy.is_anonymous_route(route, arrival.settings):
            outcome = names.OUTCOME_ANONYMOUS
        else:
            outcome, events = names.OUTCOME_MISSING, arrival.if_missing
    if not events:  # nothing to deliver: the hop kind's shared state for this outcome
        return quiet_state(hop, outcome)
    state = HopState(hop, outcome, arrival.reason)
    _record(events, own, state)
    return state


def arrived_context(
    base: Context,
    arrival: Arrival,
    state: HopState,
    span: trace.Span | None = None,
    announcement: object = None,
) -> Context:
    """``base`` as the hop's context, in one copy: what arrived, the hop's state, ``span``
    (when the hop's span is not the one current in ``base``), the ``announcement`` it was
    decided for (``_arriving``) and, with an identity, a user slot of its own."""
    values = {**base, **arrival.entries, HOP_KEY: state}
    if span is not None:
        values[SPAN_KEY] = span
    if announcement is not None:
        values[ANNOUNCEMENT_KEY] = announcement
    identity = arrival.state
    if identity is not None:
        values[SLOT_KEY] = UserSlot(state.hop, identity.identity)
    return Context(values)


def extract(
    carrier: CarrierT,
    getter: Getter[CarrierT] | None = None,
    *,
    hop: str,
    context: Context | None = None,
    route: str | None = None,
    account: bool = True,
    trace_context: bool = True,
) -> Context:
    """The receiving hop's context: the sender's trace and baggage, identity after policy.

    ``hop`` is the hop kind (``identity.hop``); ``route`` a path or gRPC method for the
    anonymous-route exemption. Inbound identity is admitted by the configured policy
    (``trust``/``verify``/``strip``), the hop is counted, and ``identity.missing`` /
    ``identity.rejected`` are recorded on the hop's span. ``account=False`` leaves counting
    to a caller that learns the outcome later (an HTTP edge whose app authenticates the
    request itself). ``trace_context=False`` says the sender's trace context is not wanted
    (the caller's instrumentation makes the hop's span from it): the hop keeps the span of
    ``context`` and is decided from the baggage alone. Never raises: on an internal error the
    result carries no identity (fail closed) and the error is logged.
    """
    base = context if context is not None else current_context()
    try:
        settings = _config.current or _config.get_settings()
        own = own_span(base, hop)
        span, arrival = _arrive(
            carrier,
            getter or default_getter,
            base,
            own,
            trace_context=trace_context,
            hop=hop,
            settings=settings,
        )
        state = settled(arrival, hop, route, own, account=account)
        return arrived_context(base, arrival, state, span if span is not own else None)
    except Exception:  # noqa: BLE001 - never break the host's request path
        _telemetry.log_internal_error("extract")
        return without_identity(base)


def _record(events: tuple[tuple[str, dict[str, Any]], ...], own: Any, state: HopState) -> None:
    """A hop's events: on its own span if it has one that records, else pending for its first."""
    if own is not None and own.is_recording():
        for name, attributes in events:
            if not (name == names.EVENT_MISSING and _telemetry.has_event(own, name)):
                _telemetry.add_event(own, name, attributes)
    else:
        state.pending.extend(events)


@contextlib.contextmanager
def continue_from(
    carrier: CarrierT,
    getter: Getter[CarrierT] | None = None,
    *,
    hop: str,
    route: str | None = None,
    require: bool = False,
) -> Iterator[Identity | None]:
    """``extract`` and attach for the block; yields the admitted identity (or None).

    With ``require=True`` a hop without an admitted identity raises before the block runs:
    ``IdentityRejectedError`` (with ``.reason``) if policy refused it, else
    ``MissingIdentityError``. The hop is accounted and its events recorded either way.
    """
    ctx = extract(carrier, getter, hop=hop, route=route)
    identity = identity_of(ctx)
    if require and identity is None:
        state = hop_state(ctx)
        if state is not None and state.reason is not None:
            raise IdentityRejectedError(state.reason)
        raise MissingIdentityError(f"no identity arrived on this {hop} hop")
    with attached(ctx) as admitted:
        yield admitted


def hop_context(ctx: Context, state: HopState, *, span: trace.Span | None = None) -> Context:
    """``ctx`` as the context of the hop ``state`` (a transport's own ``HopState`` subclass,
    say), and with ``span`` as its current span when given."""
    values = dict(ctx)
    values[HOP_KEY] = state
    if span is not None:
        values[SPAN_KEY] = span
    return Context(values)


def with_identity_of(ctx: Context, source: Context) -> Context:
    """``ctx`` (its span and everything else) with the identity, baggage and hop of ``source``.

    For a transport whose inner layer extracted the headers again into a context of its own:
    that context keeps its span and takes back what the outer hop admitted (an entry
    ``source`` lacks is None in the result, which every reader takes as absent)."""
    values = dict(ctx)
    for key in (BAGGAGE_KEY, STATE_KEY, SLOT_KEY, HOP_KEY):
        values[key] = source.get(key)
    return Context(values)
