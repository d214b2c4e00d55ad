"""The sending side of a hop: what may leave this process, and writing it into a carrier.

    headers: dict[str, str] = {}
    oi.inject(headers, destination="http://billing.svc")      # trace, baggage, identity

``outgoing_context`` applies egress policy (identity only to allowed destinations), signs an
identity established here (``identity.sig``, minted with the configured key) and trims
baggage to the W3C limits without dropping identity members; ``inject`` writes the result
through the global propagator, so ``OTEL_PROPAGATORS`` is honoured.
"""

from __future__ import annotations

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
    global _unchanged
    try:
        baggage: Mapping[str, object] | None = ctx.get(BAGGAGE_KEY)  # type: ignore[assignment]
        if not baggage:
            return ctx
        settings = _config.current or _config.get_settings()
        last, last_destination, last_settings = _unchanged
        if last is baggage and last_settings is settings and last_destination == destination:
            return ctx
        if destination is not None and not _egress.is_allowed(destination, settings.egress_allow):
            return strip_for_egress(ctx, destination, hop=hop, settings=settings)
        new_baggage = _fit(_signed(ctx, baggage, hop, settings))
        if new_baggage is baggage:
            if not settings.has_keys:  # (a signature is renewed as it ages)
                _unchanged = (baggage, destination, settings)
            return ctx
        values = dict(ctx)
        values[BAGGAGE_KEY] = new_baggage
        return Context(values)
    except Exception:  # noqa: BLE001 - send no identity rather than break the call
        _telemetry.log_internal_error("outgoing_context")
        return without_identity(ctx)


def _signed(
    ctx: Context, baggage: Mapping[str, object], hop: str | None, settings: _config.Settings
) -> Mapping[str, object]:
    """``baggage`` with a signature for the identity of ``ctx`` that is fresh enough to send.

    What the same context sent last on this kind of hop is remembered (see ``_Signed``):
    the calls a request makes send one baggage mapping, so signing is a dict lookup until
    half of the token's life is gone, the key set is reloaded or the settings change."""
    if not settings.has_keys:
        return baggage
    keys = _keys.current_keys(settings)
    if keys is None or keys.minter is None:
        return baggage
    queue = hop in _QUEUE_HOPS
    state: IdentityState | None = ctx.get(STATE_KEY)  # type: ignore[assignment]
    table = _signed_under(settings)
    known = table.get((id(state), queue))
    if known is not None and known.holds(state, baggage, keys.generation):
        return known.outgoing
    ttl = settings.queue_token_ttl if queue else settings.token_ttl
    minted = _token_for(ctx, keys, ttl)
    if minted is None:
        return baggage
    token, renew_at = minted
    outgoing = (
        baggage if baggage.get(settings.sig_key) == token else {**baggage, settings.sig_key: token}
    )
    if state is not None and state.baggage is baggage:  # what state_of decided: the same again
        signed = _Signed(state, baggage, keys.generation, outgoing, renew_at)
        _memo.remember(table, (id(state), queue), signed)
    return outgoing


class _Signed:
    """What one context's baggage leaves as, signed, on one kind of hop: valid for that
    identity state and baggage mapping (held here, so their ids are not reused meanwhile),
    under that key set generation, until ``renew_at`` (minutes since the epoch), when less
    than half of the token's life remains and a receiver could get it about to expire."""

    __slots__ = ("baggage", "generation", "outgoing", "renew_at", "state")

    def __init__(
        self,
        state: IdentityState,
        baggage: Mapping[str, object],
        generation: int,
        outgoing: Mapping[str, object],
        renew_at: float,
    ) -> None:
        self.state, self.baggage, self.generation = state, baggage, generation
        self.outgoing, self.renew_at = outgoing, renew_at

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


# Hops whose work may wait before it runs (a queue's delayed delivery, retries and consumer
# lag; a compute engine's scheduler queue and a retry after a worker dies): a token minted
# for one lives ``queue_token_ttl``; any other hop's lives ``token_ttl``.
_QUEUE_HOPS = frozenset({names.HOP_QUEUE_PUBLISH, names.HOP_TASK})


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
