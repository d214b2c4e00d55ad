"""What a context knows about identity beyond its baggage: the decoded identity and its slot.

    from otel_identity._state import state_of

    state = state_of(ctx)          # None, or the IdentityState decoded from ctx's baggage
    state.identity, state.local    # the Identity, and whether it was established here

The identity itself lives in baggage, so plain OpenTelemetry carries it. Next to it, under
private ``create_key`` keys nothing else can collide with, sit the in-process facts: the decoded
identity (so reading it is a couple of dict lookups), the per-hop slot in which
``current_user`` is resolved lazily, and the hop's state.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import cast

from opentelemetry.context import Context, create_key
from opentelemetry.util.types import AttributeValue

from otel_identity import _attributes, _baggage_propagator, _codec, _config, _memo, _policy
from otel_identity._errors import ConfigurationError
from otel_identity._identity import Identity
from otel_identity._internals import BAGGAGE_KEY

STATE_KEY = create_key("otel_identity.state")
SLOT_KEY = create_key("otel_identity.user_slot")
HOP_KEY = create_key("otel_identity.hop")
# The announcement (``_arriving.Arriving``) a hop's context was decided for, if any.
ANNOUNCEMENT_KEY = create_key("otel_identity.announcement")


def _settings() -> _config.Settings:
    """The settings in force, read without a lock once installed."""
    settings = _config.current
    if settings is None:
        try:
            settings = _config.get_settings()
        except ConfigurationError:
            # The environment was refused (and logged): identity still works inside this
            # process, under the default keys, while every hop out or in fails closed.
            settings = _config.Settings()
    return settings


@_memo.per_settings
def _member_keys(
    settings: _config.Settings,
) -> tuple[tuple[str, str, str, str], str, tuple[str, ...]]:
    """The baggage members of an identity under ``settings``: its four claims, its
    signature, and all five."""
    keys = settings.identity_keys
    return keys, settings.sig_key, (*keys, settings.sig_key)


def identity_keys() -> tuple[str, str, str, str]:
    """The baggage members that carry the four claims (user, tenant, session, roles)."""
    return _member_keys(_settings())[0]


def sig_key() -> str:
    """The baggage member that carries the identity's signature (``identity.sig``)."""
    return _member_keys(_settings())[1]


def all_identity_keys() -> tuple[str, ...]:
    """Identity members plus the signature member: what egress and policy remove."""
    return _member_keys(_settings())[2]


class IdentityState:
    """The decoded identity of a context, valid while baggage still holds the same values.

    ``local`` is its provenance: True for an identity established in this process
    (``set_identity``/``use_identity``, an edge's own authentication), False for one that
    arrived. Only a local identity, or one whose signature was verified on arrival
    (``identity.verified``), may be signed here (see ``_sending.outgoing_context``).
    """

    __slots__ = ("attributes", "baggage", "identity", "local", "raw")

    def __init__(
        self,
        raw: tuple[object, ...],
        identity: Identity,
        baggage: object = None,
        *,
        local: bool = False,
    ) -> None:
        self.raw = raw
        self.identity = identity
        self.local = local
        # The baggage mapping this was decoded from: OTel never mutates one (set_baggage
        # copies), so while a context holds the same object the values are the same.
        self.baggage = baggage
        self.attributes: tuple[str, dict[str, AttributeValue]] | None = None  # (mode, attrs)

    def span_attributes(self, mode: str) -> dict[str, AttributeValue]:
        """The span attributes of this identity (shared: callers must not mutate them)."""
        memo = self.attributes  # every span under this state asks: one lookup, no hashing
        if memo is not None and memo[0] == mode:
            return memo[1]
        identity = self.identity
        attributes = _attributes.span_attributes(identity, identity.verified, mode)
        self.attributes = (mode, attributes)
        return attributes


class UserSlot:
    """Where ``current_user`` is resolved, once, for one identity on one hop in one thread."""

    # Defaults on the class: a slot pays only for what it sets (a pool task is one, see Handoff).
    done = False
    user: object = None
    pending: object = None  # an in-flight async resolution, shared by its awaiters
    hop: str | None = None
    identity: Identity | None = None
    thread = 0

    def __init__(self, hop: str | None, identity: Identity) -> None:
        self.hop = hop
        self.identity = identity
        # The slot belongs to the thread that entered the hop; a context copied into another
        # thread by hand must not hand that thread this thread's (session-bound) user object.
        self.thread = threading.get_ident()


def state_of(ctx: Context) -> IdentityState | None:
    """The identity state of a context (decoding and caching it if baggage was set by others)."""
    baggage: Mapping[str, object] | None = ctx.get(BAGGAGE_KEY)  # type: ignore[assignment]
    if not baggage:
        return None
    state: IdentityState | None = ctx.get(STATE_KEY)  # type: ignore[assignment]
    if state is not None and state.baggage is baggage:
        return state
    raw = _codec.raw_values(baggage, identity_keys())
    if state is not None and state.raw == raw:
        return state
    return _foreign_state(baggage, raw)


def identity_of(ctx: Context) -> Identity | None:
    """The identity of ``ctx``, or None."""
    state = state_of(ctx)
    return None if state is None else state.identity


def _foreign_state(baggage: Mapping[str, object], raw: tuple[object, ...]) -> IdentityState | None:
    """The state of identity baggage set by something other than otel-identity (a plain OTel
    propagator, say): its provenance is unknown, so it counts only if it passes the inbound
    policy, and never once the global textmap's baggage step is no longer ours (another parser
    read the header). The state is shared per identity and settings (spans started under it
    reuse its attributes)."""
    if raw == (None, None, None, None) or _baggage_propagator.displaced():
        return None
    settings = _settings()
    known = _unknown_under(settings)
    try:
        state = known.get(raw, _NOT_SEEN)
    except TypeError:  # an unhashable value put in baggage by other code: nothing to share
        return _admitted(baggage, raw)
    if state is _NOT_SEEN:
        state = _admitted(baggage, raw)
        # Remembered except under ``verify``, where a signature's expiry is checked every time.
        if settings.effective_inbound != "verify":
            _memo.remember(known, raw, state)
    return state  # type: ignore[return-value]


_NOT_SEEN = object()


@_memo.per_settings
def _unknown_under(settings: _config.Settings) -> dict[tuple[object, ...], object]:
    """Raw identity values -> their state, for baggage no otel-identity hop decoded, decided
    under ``settings`` (new settings, a new table)."""
    return {}


def _admitted(baggage: Mapping[str, object], raw: tuple[object, ...]) -> IdentityState | None:
    identity = _policy.admit_unknown(baggage, raw)
    return None if identity is None else IdentityState(raw, identity)


def may_sign(state: IdentityState) -> bool:
    """Whether this process may sign ``state``'s identity: established here, or verified on
    arrival on this hop. An identity admitted on trust never is (trust laundering)."""
    return state.local or state.identity.verified


def without_identity(ctx: Context) -> Context:
    """``ctx`` without identity: its baggage without the identity members, no state, no slot."""
    drop = set(all_identity_keys())
    values = dict(ctx)
    baggage = cast("Mapping[str, object]", values.get(BAGGAGE_KEY) or {})
    values[BAGGAGE_KEY] = {k: v for k, v in baggage.items() if k not in drop}
    values.pop(STATE_KEY, None)
    values.pop(SLOT_KEY, None)
    return Context(values)
