"""The sending side of a hop: what may leave this process, and writing it into a carrier.

    headers: dict[str, str] = {}
    oi.inject(headers, destination="http://billing.svc")      # trace, baggage, identity

``outgoing_context`` applies egress policy (identity only to allowed destinations), signs an
identity established here (``identity.sig``, minted with the configured key) and trims
baggage to the W3C limits without dropping identity members; ``inject`` writes the result
through the global propagator, so ``OTEL_PROPAGATORS`` is honoured.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import cast

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import CarrierT, Setter, default_setter

from otel_identity import (
    _codec,
    _config,
    _egress,
    _keys,
    _memo,
    _propagation,
    _signing,
    _telemetry,
    names,
)
from otel_identity._internals import BAGGAGE_KEY
from otel_identity._runtime import current_context
from otel_identity._state import (
    STATE_KEY,
    IdentityState,
    all_identity_keys,
    identity_keys,
    may_sign,
    state_of,
    without_identity,
)


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
    ctx = context if context is not None else current_context()
    outgoing = outgoing_context(ctx, destination=destination, hop=hop)
    _propagation.inject(carrier, outgoing, setter or default_setter)


# Hops whose work may wait before it runs (a queue's delayed delivery, retries and consumer
# lag; a compute engine's scheduler queue and a retry after a worker dies): a token minted
# for one lives ``queue_token_ttl``; any other hop's lives ``token_ttl``.
_QUEUE_HOPS = frozenset({names.HOP_QUEUE_PUBLISH, names.HOP_TASK})


class _AsIs:
    """A baggage mapping found to leave unchanged for one destination and kind of hop under
    one settings object: for good when nothing is signed, else while its token is fresh
    (``_Signed.renew_at``) and the key set that signed it is in force."""

    __slots__ = ("baggage", "destination", "generation", "queue", "settings", "until")

    def __init__(
        self,
        baggage: object,
        destination: str | None,
        queue: bool,
        settings: object,
        signed: _Signed | None = None,
    ) -> None:
        self.baggage, self.destination = baggage, destination
        self.queue, self.settings = queue, settings
        self.generation = None if signed is None else signed.generation
        self.until = math.inf if signed is None else signed.renew_at

    def holds(
        self, baggage: object, destination: str | None, queue: bool, settings: _config.Settings
    ) -> bool:
        if self.baggage is not baggage or self.settings is not settings:
            return False
        if self.destination != destination or self.queue is not queue:
            return False
        return self.generation is None or _signing.in_force(self.until, self.generation, settings)


# The mapping last found to leave as it is: the calls a request makes send its one baggage
# mapping (OpenTelemetry never mutates one), mostly to one destination, and a transport
# hands the signed context it leaves as to ``inject`` again.
_as_is = _AsIs(None, None, False, None)
# (baggage, identity keys, what _codec.fit said), for the same reason.
_fitted: tuple[object, object, dict[str, object] | None] = (None, None, None)


def outgoing_context(
    ctx: Context, *, destination: str | None = None, hop: str | None = None
) -> Context:
    """The context as it may leave this process: egress policy, signature, W3C limits.

    Never raises: on an internal error the context leaves without identity (fail closed)."""
    global _as_is
    try:
        baggage: Mapping[str, object] | None = ctx.get(BAGGAGE_KEY)  # type: ignore[assignment]
        if not baggage:
            return ctx
        settings = _config.current or _config.get_settings()
        queue = hop in _QUEUE_HOPS
        if _as_is.holds(baggage, destination, queue, settings):
            return ctx
        if destination is not None and not _egress.is_allowed(destination, settings.egress_allow):
            return strip_for_egress(ctx, destination, hop=hop, settings=settings)
        signed = _signed(ctx, baggage, queue, settings)
        new_baggage = _fit(baggage if signed is None else signed.outgoing)
        if signed is not None or not settings.has_keys:  # (else a minter may appear)
            _as_is = _AsIs(new_baggage, destination, queue, settings, signed)
        return ctx if new_baggage is baggage else _leaving(ctx, new_baggage, signed)
    except Exception:  # noqa: BLE001 - send no identity rather than break the call
        _telemetry.log_internal_error("outgoing_context")
        return without_identity(ctx)


def _leaving(ctx: Context, baggage: Mapping[str, object], signed: _Signed | None) -> Context:
    """``ctx`` leaving with ``baggage``, and with its signed state when that is its state."""
    values = dict(ctx)
    values[BAGGAGE_KEY] = baggage
    sent = None if signed is None else signed.sent
    if sent is not None and sent.baggage is baggage:
        values[STATE_KEY] = sent
    return Context(values)


def _signed(
    ctx: Context, baggage: Mapping[str, object], queue: bool, settings: _config.Settings
) -> _Signed | None:
    """``baggage`` with a signature for the identity of ``ctx`` that is fresh enough to send,
    or None to send it as it is.

    What the same context sent last on this kind of hop is remembered (see ``_Signed``):
    the calls a request makes send one baggage mapping, so signing is a dict lookup until
    half of the token's life is gone, the key set is reloaded or the settings change."""
    if not settings.has_keys:
        return None
    keys = _keys.current_keys(settings)
    if keys is None or keys.minter is None:
        return None
    state: IdentityState | None = ctx.get(STATE_KEY)  # type: ignore[assignment]
    table = _signed_under(settings)
    known = table.get((id(state), queue))
    if known is not None and known.holds(state, baggage, keys.generation):
        return known
    ttl = settings.queue_token_ttl if queue else settings.token_ttl
    minted = _token_for(ctx, keys, ttl)
    if minted is None:
        return None
    token, renew_at = minted
    unchanged = baggage.get(settings.sig_key) == token
    outgoing = baggage if unchanged else {**baggage, settings.sig_key: token}
    signed = _Signed(state, baggage, keys.generation, outgoing, renew_at)
    if state is not None and state.baggage is baggage:  # what state_of decided: the same again
        _memo.remember(table, (id(state), queue), signed)
    return signed


class _Signed:
    """What one context's baggage leaves as, signed, on one kind of hop: valid for that
    identity state and baggage mapping (held here, so their ids are not reused meanwhile),
    under that key set generation, until ``renew_at`` (minutes since the epoch), when less
    than half of the token's life remains and a receiver could get it about to expire."""

    __slots__ = ("baggage", "generation", "outgoing", "renew_at", "sent", "state")

    def __init__(
        self,
        state: IdentityState | None,
        baggage: Mapping[str, object],
        generation: int,
        outgoing: Mapping[str, object],
        renew_at: float,
    ) -> None:
        self.state, self.baggage, self.generation = state, baggage, generation
        self.outgoing, self.renew_at = outgoing, renew_at
        # The state of what leaves: the same identity, decoded from the signed mapping (so
        # the spans and hops that read the outgoing context find it without decoding).
        self.sent = None
        if state is not None and state.baggage is baggage and outgoing is not baggage:
            self.sent = IdentityState(state.raw, state.identity, outgoing, local=state.local)

    def holds(self, state: object, baggage: object, generation: int) -> bool:
        return (
            self.state is state
            and self.baggage is baggage
            and self.generation == generation
            and _signing.now_minutes() < self.renew_at
        )


@_memo.per_settings
def _signed_under(settings: _config.Settings) -> dict[tuple[int, bool], _Signed]:
    """(id of an identity state, queue hop or not) -> what it last left as, signed (new
    settings, a new table)."""
    return {}


def _fit(baggage: Mapping[str, object]) -> Mapping[str, object]:
    """``baggage`` trimmed to the W3C limits without dropping identity members (remembered
    for the last mapping asked about)."""
    global _fitted
    keys = identity_keys()
    last, last_keys, fitted = _fitted
    if last is not baggage or last_keys is not keys:
        fitted = _codec.fit(baggage, keys)
        _fitted = (baggage, keys, fitted)
    return baggage if fitted is None else fitted


def _token_for(ctx: Context, keys: _keys.KeySet, ttl: int) -> tuple[str, float] | None:
    """A fresh ``identity.sig`` for the identity of ``ctx`` and when to renew it, or None to
    send baggage as it is.

    Only an identity established in this process or verified on arrival is signed (the
    minting rules of DESIGN.md). One admitted on trust, or any identity on a service that
    holds no minting key, leaves with whatever token arrived with it, unchanged, for a
    downstream verifier to judge; a local one then leaves unsigned.
    """
    state = state_of(ctx)
    if state is None or not may_sign(state):
        return None
    return _signing.minted(state.identity, keys, ttl)


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
    baggage = cast("Mapping[str, object]", ctx.get(BAGGAGE_KEY) or {})
    had_identity = not set(all_identity_keys()).isdisjoint(baggage)
    if not settings.egress_strip_all_baggage and not had_identity:
        return ctx
    stripped = without_identity(ctx)
    if settings.egress_strip_all_baggage:
        stripped = Context({**stripped, BAGGAGE_KEY: {}})
    if record and had_identity:
        # The first host it may reach that is off the list (a gRPC target may have several).
        address = _egress.host_of(destination, settings.egress_allow)
        _telemetry.record_stripped(
            span or trace.get_current_span(ctx), hop or names.HOP_MANUAL, address
        )
    return stripped


def baggage_context(baggage: Mapping[str, object]) -> Context:
    """A context holding exactly ``baggage`` and nothing else: what a transport hands the
    global propagator to encode a baggage mapping it has at hand."""
    return Context({BAGGAGE_KEY: baggage})
