"""The two sides of every hop: ``inject`` on the sender, ``extract`` on the receiver.

    headers: dict[str, str] = {}
    oi.inject(headers, destination="http://billing.svc")      # send side
    ...
    with oi.continue_from(headers, hop="queue.consume"):        # receive side
        handle(message)                                         # identity and current_user set

Every receiving hop goes through ``extract`` (or ``receive`` for an in-process hand-off), the
one place where inbound policy, limits and hop accounting happen; transports only supply a
getter/setter. Propagation always goes through the global propagator, so ``OTEL_PROPAGATORS``
is honoured; nothing here parses a header value.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any, cast

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.baggage import _BAGGAGE_KEY
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, Context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.instrumentation.utils import _SUPPRESS_INSTRUMENTATION_KEY_PLAIN
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    default_getter,
    default_setter,
)
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation import _SPAN_KEY  # stable since 1.0; one copy, not two

from otel_identity import (
    _baggage,
    _codec,
    _config,
    _egress,
    _keys,
    _memo,
    _policy,
    _propagation,
    _signing,
    _telemetry,
    names,
)
from otel_identity._context import (
    _SLOT_KEY,
    _STATE_KEY,
    HOP_KEY,
    Handoff,
    IdentityState,
    UserSlot,
    all_identity_keys,
    get_identity,
    hop_of,
    identity_keys,
    may_sign,
    state_of,
)
from otel_identity._errors import IdentityRejectedError, MissingIdentityError
from otel_identity._identity import Identity
from otel_identity._telemetry import local as _per_thread

# The SDK's span classes (its tracer makes a subclass): spans known to have valid ids.
_SDK_SPANS = (SdkSpan, *SdkSpan.__subclasses__())
# The span kind an instrumentation gives the receiving side of each hop kind.
_HOP_SPAN_KIND = {
    names.HOP_HTTP_SERVER: SpanKind.SERVER,
    names.HOP_GRPC_SERVER: SpanKind.SERVER,
    names.HOP_QUEUE_CONSUME: SpanKind.CONSUMER,
}


# Attaching a Context is setting OTel's ContextVar. Through the API that is two more calls
# each way, a noticeable share of a thread hop; so with the default runtime context (the only
# one OpenTelemetry Python ships) hops set the variable itself, with the same semantics, as
# long as the detach happens in the same thread or task as the attach (``detach_raw`` raises
# where OpenTelemetry's ``detach`` would log).
_runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
current_context: Callable[[], Context] = otel_context.get_current
attach_raw: Callable[[Context], Any] = otel_context.attach
detach_raw: Callable[[Any], None] = otel_context.detach
if type(_runtime) is ContextVarsRuntimeContext:
    current_context = _runtime._current_context.get
    attach_raw = _runtime._current_context.set
    detach_raw = _runtime._current_context.reset


def suppressed(ctx: Context) -> bool:
    """Whether ``ctx`` suppresses instrumentation: ``is_instrumentation_enabled`` for a
    context already at hand, without looking the current one up again."""
    return bool(
        ctx.get(_SUPPRESS_INSTRUMENTATION_KEY) or ctx.get(_SUPPRESS_INSTRUMENTATION_KEY_PLAIN)
    )


class HopState:
    """What happened on one receiving hop; events wait here until a span can take them."""

    __slots__ = ("hop", "key", "outcome", "pending", "reason")

    def __init__(self, hop: str, outcome: str, reason: str | None = None) -> None:
        self.hop = hop
        self.outcome = outcome
        self.key = _telemetry.hop_key(hop, outcome, reason)  # what the hop counter counts
        self.reason = reason
        self.pending: list[tuple[str, dict[str, Any]]] = []

    def flush(self, span: trace.Span) -> None:
        """Put pending events on ``span`` (the hop's first span); each goes to one span only."""
        while self.pending:
            try:
                name, attributes = self.pending.pop(0)
            except IndexError:  # another thread flushed concurrently
                return
            _telemetry.add_event(span, name, attributes)


# Shared states by outcome, then hop kind: every outcome a hop without events can have.
_quiet: dict[str, dict[str, HopState]] = {
    names.OUTCOME_PRESENT: {},
    names.OUTCOME_MISSING: {},
    names.OUTCOME_ANONYMOUS: {},
}
# Read directly on every in-process hop that arrives with identity: one dict lookup.
_present = _quiet[names.OUTCOME_PRESENT]


def _quiet_state(hop: str, outcome: str) -> HopState:
    """A shared state for hops with no events to deliver. It is never mutated: pending
    events only ever go into a hop's own new state."""
    states = _quiet.setdefault(outcome, {})
    state = states.get(hop)
    if state is None:
        state = states.setdefault(hop, HopState(hop, outcome))
    return state


def hop_state(context: Context | None = None) -> HopState | None:
    """The state of the receiving hop ``context`` belongs to, if any."""
    ctx = context if context is not None else otel_context.get_current()
    return hop_of(ctx)  # type: ignore[return-value]


@functools.lru_cache(maxsize=1024)
def _route_matches(route: str, patterns: tuple[str, ...]) -> bool:
    return any(route == p or fnmatch.fnmatchcase(route, p) for p in patterns)


def is_anonymous_route(route: str | None, settings: _config.Settings | None = None) -> bool:
    """Whether ``route`` (a path or a gRPC method) is exempt from requiring identity."""
    if not route:
        return False
    patterns = (settings or _config.get_settings()).anonymous_routes
    return bool(patterns) and _route_matches(route, patterns)


def missing_event(hop: str, settings: _config.Settings) -> tuple[str, dict[str, Any]]:
    return (
        names.EVENT_MISSING,
        {names.ATTR_HOP: hop, names.ATTR_MISSING_KEYS: (settings.user_key, settings.tenant_key)},
    )


_keep: tuple[_config.Settings | None, frozenset[str]] = (None, frozenset())


def _keep_keys(settings: _config.Settings) -> frozenset[str]:
    """Members the W3C limits must never drop, for these settings (cached per settings)."""
    global _keep
    if _keep[0] is not settings:
        _keep = (settings, frozenset((*settings.identity_keys, settings.sig_key)))
    return _keep[1]


class Arrival:
    """What one baggage arriving on one kind of hop means under one settings object.

    A pure function of those three (signatures aside, see ``cacheable``), so the same header
    on the next request of a session is a dict lookup: decoding, policy, the identity state
    and its span attributes are shared by every hop it arrives on. Never mutated once built.
    """

    __slots__ = (
        "cacheable",
        "entries",
        "events",
        "if_missing",
        "outcome",
        "present",
        "reason",
        "settings",
        "state",
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
        reason = wire.verdict(_keep_keys(settings))
        identity = None
        if reason is None:
            identity, reason = _policy.admit(baggage, raw, policy, settings)
        required = hop in settings.required_hops
        self.if_missing = (missing_event(hop, settings),) if required else ()
        self.events: tuple[tuple[str, dict[str, Any]], ...] = ()
        # The outcome, or None when it depends on the route (missing, or anonymous).
        self.outcome: str | None = None
        if reason is not None:
            self.outcome = names.OUTCOME_REJECTED
            drop = set(all_identity_keys())
            baggage = {k: v for k, v in baggage.items() if k not in drop}
            rejected = (
                names.EVENT_REJECTED,
                {names.ATTR_HOP: hop, names.ATTR_REJECT_REASON: reason},
            )
            self.events = (rejected, *self.if_missing)
            _telemetry.log_limited(
                f"rejected:{hop}:{reason}",
                "otel-identity: inbound identity rejected on %s hop (%s); it was removed",
                hop,
                reason,
            )
        elif identity is not None:
            self.outcome = names.OUTCOME_PRESENT
        self.reason = reason
        self.state = None if identity is None else IdentityState(raw, identity, baggage)
        # A present hop has no events: its state is the hop kind's shared one.
        self.present = None if identity is None else _quiet_state(hop, names.OUTCOME_PRESENT)
        # What the hop's context takes from this (its user slot and hop state are its own).
        self.entries: dict[str, object] = {
            _BAGGAGE_KEY: baggage,
            _STATE_KEY: self.state,
            _SLOT_KEY: None,
        }
        # A verified identity holds only until its signature expires: decide it every time.
        self.cacheable = policy != "verify" or raw == (None, None, None, None)


# (baggage header, hop kind) -> what it means; validated against the settings on every hit.
_arrivals: dict[tuple[str | None, str], Arrival] = {}
_NO_BAGGAGE: Mapping[str, object] = {}


def _new_arrival(header: str | None, hop: str, settings: _config.Settings) -> Arrival:
    """What ``header`` means on ``hop``, decided afresh (and remembered where it may be)."""
    parsed = _baggage.parse(header, _keep_keys(settings)) if header else _baggage.EMPTY
    arrival = Arrival(parsed.members, parsed, hop, settings)
    if arrival.cacheable:
        _memo.remember(_arrivals, (header, hop), arrival)
    return arrival


def _arrival_from_propagator(
    carrier: CarrierT,
    getter: Getter[CarrierT],
    base: Context,
    own: trace.Span | None,
    *,
    sender: bool,
    hop: str,
    settings: _config.Settings,
) -> tuple[trace.Span, Arrival]:
    """The general case of ``extract``: the whole global propagator runs, whatever its shape,
    and the hop continues ``own`` (its own span), else the sender's span (when ``sender``),
    else whatever ``base`` had."""
    remote, parsed = _propagation.extract(carrier, getter, _keep_keys(settings))
    span = own
    if span is None:
        sent = trace.get_current_span(remote)
        valid = sender and sent.get_span_context().is_valid
        span = sent if valid else trace.get_current_span(base)
    baggage: Mapping[str, object] = remote.get(_BAGGAGE_KEY) or _NO_BAGGAGE  # type: ignore[assignment]
    return span, Arrival(baggage, parsed, hop, settings)


def extract(  # noqa: PLR0915 - one hot path, written out (see below)
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
    # Every request of every service runs this: the steps that would each be a small
    # function are written out here, since a Python call is a measurable share of a hop.
    base = context if context is not None else current_context()
    try:
        settings = _config.current or _config.get_settings()
        getter = getter or default_getter
        # The hop's own span is one an instrumentation already started for it, current in
        # ``base``: the hop keeps it (its children stay under it and it takes the hop's
        # events). Without one, the hop continues the sender's remote span.
        own: Any = base.get(_SPAN_KEY)
        if own is not None:
            # (the SDK gives its spans valid ids, and keeps their kind behind a property:
            # read in place; any other span is asked)
            sdk = type(own) in _SDK_SPANS
            kind = (sdk and getattr(own, "_kind", None)) or getattr(own, "kind", None)
            if kind is not _HOP_SPAN_KIND.get(hop, False) or not (
                sdk or own.get_span_context().is_valid
            ):
                own = None
        shape = None
        if own is not None or not trace_context:
            textmap = propagate.get_global_textmap()
            known, shape = _propagation.shape  # baggage_only()'s memo, read in place
            if known is not textmap:
                shape = _propagation.baggage_only(textmap)
        if shape is not None:
            # The propagator reads nothing but the trace context (not needed: the span is
            # known) and the baggage header: the header alone decides the hop.
            header: Any = None
            if shape:
                found: Any = getter.get(carrier, "baggage")
                # (_propagation.joined(found), its common case written out)
                header = found[0] if type(found) is list and len(found) == 1 else found
                if type(header) is not str:
                    header = _propagation.joined(found)
            arrival = _arrivals.get((header, hop))
            if arrival is None or arrival.settings is not settings:
                arrival = _new_arrival(header, hop, settings)
            span = own if own is not None else trace.get_current_span(base)
        else:
            span, arrival = _arrival_from_propagator(
                carrier, getter, base, own, sender=trace_context, hop=hop, settings=settings
            )

        state = arrival.present  # a present hop's state is known in advance
        if state is None:
            outcome, events = arrival.outcome, arrival.events
            if outcome is None:
                if is_anonymous_route(route, settings):
                    outcome = names.OUTCOME_ANONYMOUS
                else:
                    outcome, events = names.OUTCOME_MISSING, arrival.if_missing
            if events:
                state = HopState(hop, outcome, arrival.reason)
                _record(events, own, state)
            else:  # nothing to deliver: the hop kind's shared state for this outcome
                state = _quiet[outcome].get(hop) or _quiet_state(hop, outcome)
        if account:
            try:  # _telemetry.count, inlined
                counts = _per_thread.state.counts
            except AttributeError:
                counts = _telemetry.thread_state().counts
            key = state.key
            counts[key] = counts.get(key, 0) + 1

        values = {**base, **arrival.entries, HOP_KEY: state}
        if span is not own:
            values[_SPAN_KEY] = span
        identity = arrival.state
        if identity is not None:
            values[_SLOT_KEY] = UserSlot(hop, identity.identity)
        return Context(values)
    except Exception:  # noqa: BLE001 - never break the host's request path
        _telemetry.log_internal_error("extract")
        return _without_identity(base)


def _record(events: tuple[tuple[str, dict[str, Any]], ...], own: Any, state: HopState) -> None:
    """A hop's events: on its own span if it has one that records, else pending for its first."""
    if own is not None and own.is_recording():
        for name, attributes in events:
            if not (name == names.EVENT_MISSING and _telemetry.has_event(own, name)):
                _telemetry.add_event(own, name, attributes)
    else:
        state.pending.extend(events)


def _without_identity(ctx: Context) -> Context:
    drop = set(all_identity_keys())
    values = dict(ctx)
    baggage = cast("Mapping[str, object]", values.get(_BAGGAGE_KEY) or {})
    values[_BAGGAGE_KEY] = {k: v for k, v in baggage.items() if k not in drop}
    values.pop(_STATE_KEY, None)
    values.pop(_SLOT_KEY, None)
    return Context(values)


def receive(context: Context, *, hop: str) -> Context:
    """The receiving side of an in-process hand-off (thread, executor, task).

    ``context`` was captured by the sender at hand-off; the result is that context as a new
    hop: counted, with a fresh ``current_user`` slot so the receiver resolves its own user
    object, and with ``identity.missing`` pending for the hop's first span if required.
    """
    try:
        state = state_of(context)
        values: dict[str, object] = dict(context)
        if state is not None:
            hop_state = _present.get(hop) or _quiet_state(hop, names.OUTCOME_PRESENT)
            values[_SLOT_KEY] = UserSlot(hop, state.identity)
        else:
            hop_state = _missing_state(hop)
        _telemetry.count(hop_state.key)
        values[HOP_KEY] = hop_state
        return Context(values)
    except Exception:  # noqa: BLE001
        _telemetry.log_internal_error("receive")
        return context


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
    identity = get_identity(ctx)
    if require and identity is None:
        state = hop_state(ctx)
        if state is not None and state.reason is not None:
            raise IdentityRejectedError(state.reason)
        raise MissingIdentityError(f"no identity arrived on this {hop} hop")
    with attached(ctx) as admitted:
        yield admitted


def continue_context(context: Context, *, hop: str) -> AbstractContextManager[Identity | None]:
    """``receive`` and attach for the block: the in-process twin of ``continue_from``."""
    return attached(receive(context, hop=hop))


def enter(handoff: Handoff, hop: str) -> Any:
    """Start ``handoff``, a hop that owns this thread while it runs; ``leave`` ends it.

    ``handoff.source`` (the context the sender captured) is attached as it is, no copy, and
    ``handoff`` is kept for the thread: the hop is counted, gets ``handoff`` as its own
    ``current_user`` slot, and a ``HopState`` (with ``identity.missing`` pending for its first
    span where required). For hops that run synchronously to their end in the thread (a
    thread's ``run``, a pool task); everything else, async code included, uses
    ``continue_context``. Never raises: on an internal error the hop runs on the captured
    context with no hop of its own. Returns the token for ``leave``.
    """
    captured = handoff.source
    try:
        try:
            here = _per_thread.state
        except AttributeError:
            here = _telemetry.thread_state()
        handoff.thread_state = here
        handoff.outer = here.handoff
        state: IdentityState | None = captured.get(_STATE_KEY)  # type: ignore[assignment]
        if state is None or state.baggage is not captured.get(_BAGGAGE_KEY):
            state = state_of(captured)  # (its own first check, inlined above: every hop)
        if state is not None:
            hop_state = _present.get(hop) or _quiet_state(hop, names.OUTCOME_PRESENT)
        else:
            hop_state = _missing_state(hop)
        counts, key = here.counts, hop_state.key  # _telemetry.count, inlined: every hop
        counts[key] = counts.get(key, 0) + 1
        handoff.state = hop_state
        here.handoff = handoff
    except Exception:  # noqa: BLE001
        _telemetry.log_internal_error("enter")
    return attach_raw(captured)


def leave(handoff: Handoff, token: Any) -> None:
    """End the hop ``enter`` started (in the same thread, innermost first)."""
    try:  # noqa: SIM105 - contextlib.suppress would cost a context manager on every hop
        handoff.thread_state.handoff = handoff.outer
    except AttributeError:  # enter failed before it kept the hand-off for the thread
        pass
    detach_raw(token)


def _missing_state(hop: str) -> HopState:
    """The state of a hop that arrived without identity (not counted yet)."""
    settings = _config.get_settings()
    if hop not in settings.required_hops:
        return _quiet_state(hop, names.OUTCOME_MISSING)
    state = HopState(hop, names.OUTCOME_MISSING)
    state.pending.append(missing_event(hop, settings))
    return state


@contextlib.contextmanager
def attached(ctx: Context) -> Iterator[Identity | None]:
    """Attach a hop's context for the block (yielding its identity) and detach after.

    The last step of every receiving hop; transports whose messages carry their own
    extraction (``message_context``) use it directly."""
    token = otel_context.attach(ctx)
    try:
        yield get_identity(ctx)
    finally:
        otel_context.detach(token)


def inject(
    carrier: CarrierT,
    setter: Setter[CarrierT] | None = None,
    *,
    destination: str | None = None,
    hop: str | None = None,
    context: Context | None = None,
) -> None:
    """Write the context (trace, baggage, identity) into ``carrier`` for the next hop.

    With ``destination`` (URL, ``host:port`` or host), identity members are sent only if the
    destination is on the egress allow list; otherwise they are removed and an
    ``identity.stripped`` event is recorded. Baggage is trimmed to the W3C limits without
    dropping identity members, and signed when signing keys are configured.
    """
    ctx = context if context is not None else otel_context.get_current()
    outgoing = outgoing_context(ctx, destination=destination, hop=hop)
    _propagation.inject(carrier, outgoing, setter or default_setter)


# (baggage, destination, settings) last found to leave unchanged: the calls a request makes
# send its one baggage mapping (OpenTelemetry never mutates one), mostly to one destination.
_unchanged: tuple[object, object, object] = (None, None, None)
# (baggage, identity keys, what _codec.fit said), for the same reason.
_fitted: tuple[object, object, dict[str, object] | None] = (None, None, None)


def outgoing_context(
    ctx: Context, *, destination: str | None = None, hop: str | None = None
) -> Context:
    """The context as it may leave this process: egress policy, signature, W3C limits.

    Never raises: on an internal error the context leaves without identity (fail closed)."""
    global _unchanged, _fitted
    try:
        baggage: Mapping[str, object] | None = ctx.get(_BAGGAGE_KEY)  # type: ignore[assignment]
        if not baggage:
            return ctx
        settings = _config.current or _config.get_settings()
        last, last_destination, last_settings = _unchanged
        if last is baggage and last_settings is settings and last_destination == destination:
            return ctx
        if destination is not None and not _egress.is_allowed(destination, settings.egress_allow):
            return strip_for_egress(ctx, destination, hop=hop, settings=settings)
        new_baggage: dict[str, object] | None = None
        if settings.has_keys:
            token = _token_for(ctx, hop, settings)
            if token is not None and baggage.get(settings.sig_key) != token:
                new_baggage = {**baggage, settings.sig_key: token}
        fitting, keys = new_baggage or baggage, identity_keys()
        last, last_keys, fitted = _fitted
        if last is not fitting or last_keys is not keys:
            fitted = _codec.fit(fitting, keys)
            _fitted = (fitting, keys, fitted)
        if fitted is not None:
            new_baggage = fitted
        if new_baggage is None:
            if not settings.has_keys:  # (a signature is renewed as it ages)
                _unchanged = (baggage, destination, settings)
            return ctx
        values = dict(ctx)
        values[_BAGGAGE_KEY] = new_baggage
        return Context(values)
    except Exception:  # noqa: BLE001 - send no identity rather than break the call
        _telemetry.log_internal_error("outgoing_context")
        return _without_identity(ctx)


# Hops whose work may wait before it runs (a queue's delayed delivery, retries and consumer
# lag; a compute engine's scheduler queue and a retry after a worker dies): a token minted
# for one lives ``queue_token_ttl``; any other hop's lives ``token_ttl``.
_QUEUE_HOPS = frozenset({names.HOP_QUEUE_PUBLISH, names.HOP_TASK})


def _token_for(ctx: Context, hop: str | None, settings: _config.Settings) -> str | None:
    """A fresh ``identity.sig`` for the identity of ``ctx``, or None to send baggage as it is.

    Only an identity established in this process or verified on arrival is signed (the
    minting rules of DESIGN.md). One admitted on trust, or any identity on a service that
    holds no minting key, leaves with whatever token arrived with it, unchanged, for a
    downstream verifier to judge; a local one then leaves unsigned.
    """
    state = state_of(ctx)
    if state is None or not may_sign(state):
        return None
    keys = _keys.current_keys(settings)
    if keys is None or keys.minter is None:
        return None
    ttl = settings.queue_token_ttl if hop in _QUEUE_HOPS else settings.token_ttl
    return _signing.mint(state.identity, keys, ttl)


def strip_for_egress(
    ctx: Context,
    destination: str,
    *,
    hop: str | None = None,
    settings: _config.Settings | None = None,
    span: trace.Span | None = None,
    record: bool = True,
) -> Context:
    """``ctx`` without identity (or any baggage, if so configured), recording the removal
    unless ``record`` is false (a caller that decides later whether anything was removed
    from what leaves records it itself).

    ``identity.stripped`` and the strip counter are recorded (the event on ``span``, else the
    current span of ``ctx``) only when identity members were there to remove: never for
    baggage that held none."""
    settings = settings or _config.get_settings()
    baggage = cast("Mapping[str, object]", ctx.get(_BAGGAGE_KEY) or {})
    drop = set(all_identity_keys())
    had_identity = not drop.isdisjoint(baggage)
    if not settings.egress_strip_all_baggage and not had_identity:
        return ctx
    values = dict(ctx)
    if settings.egress_strip_all_baggage:
        values[_BAGGAGE_KEY] = {}
    else:
        values[_BAGGAGE_KEY] = {k: v for k, v in baggage.items() if k not in drop}
    values.pop(_STATE_KEY, None)
    values.pop(_SLOT_KEY, None)
    if record and had_identity:
        # The first host it may reach that is off the list (a gRPC target may have several).
        address = _egress.host_of(destination, settings.egress_allow)
        _telemetry.record_stripped(
            span or trace.get_current_span(ctx), hop or names.HOP_MANUAL, address
        )
    return Context(values)


def baggage_context(baggage: Mapping[str, object]) -> Context:
    """A context holding exactly ``baggage`` and nothing else: what a transport hands the
    global propagator to encode a baggage mapping it has at hand."""
    return Context({_BAGGAGE_KEY: baggage})


def hop_context(ctx: Context, state: HopState, *, span: trace.Span | None = None) -> Context:
    """``ctx`` as the context of the hop ``state`` (a transport's own ``HopState`` subclass,
    say), and with ``span`` as its current span when given."""
    values = dict(ctx)
    values[HOP_KEY] = state
    if span is not None:
        values[_SPAN_KEY] = span
    return Context(values)


def with_identity_of(ctx: Context, source: Context) -> Context:
    """``ctx`` (its span and everything else) with the identity, baggage and hop of ``source``.

    For a transport whose inner layer extracted the headers again into a context of its own:
    that context keeps its span and takes back what the outer hop admitted (an entry
    ``source`` lacks is None in the result, which every reader takes as absent)."""
    values = dict(ctx)
    for key in (_BAGGAGE_KEY, _STATE_KEY, _SLOT_KEY, HOP_KEY):
        values[key] = source.get(key)
    return Context(values)
