"""Identity in a Context: the manual baggage API.

    import otel_identity as oi

    with oi.use_identity(user_id="u-42", tenant_id="acme"):
        oi.get_identity()          # Identity(user_id='u-42', tenant_id='acme', ...)
        requests.get(url)          # any OTel propagation carries it as W3C baggage

The identity itself lives in baggage, so plain OpenTelemetry carries it. Next to it, under
private ``create_key`` keys nothing else can collide with, sit the in-process facts: the decoded
identity (so reading it is a couple of dict lookups), and the per-hop slot in which
``current_user`` is resolved lazily.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, cast

from opentelemetry import context as otel_context
from opentelemetry.baggage import _BAGGAGE_KEY  # stable since 1.0; saves a copy per read
from opentelemetry.context import Context, create_key
from opentelemetry.util.types import AttributeValue

from otel_identity import _baggage_propagator, _codec, _config, _memo, _policy, names
from otel_identity._errors import ConfigurationError, MissingIdentityError
from otel_identity._identity import Identity
from otel_identity._telemetry import ThreadState, thread_state
from otel_identity._telemetry import local as _per_thread

_STATE_KEY = create_key("otel_identity.state")
_SLOT_KEY = create_key("otel_identity.user_slot")
HOP_KEY = create_key("otel_identity.hop")

F = TypeVar("F", bound=Callable[..., Any])

# The configured keys, refreshed whenever settings change (read on every get_identity).
_keys: tuple[str, str, str, str] | None = None
_sig_key = "identity.sig"


def _on_settings(settings: _config.Settings | None) -> None:
    global _keys, _sig_key
    if settings is None:
        _keys = None
        return
    _keys = settings.identity_keys
    _sig_key = settings.sig_key


_config.on_change(_on_settings)


def identity_keys() -> tuple[str, str, str, str]:
    keys = _keys
    if keys is None:
        try:
            keys = _config.get_settings().identity_keys  # installs them, through _on_settings
        except ConfigurationError:
            # The environment was refused (and logged): identity still works inside this
            # process, under the default keys, while every hop out or in fails closed.
            keys = _config.Settings().identity_keys
    return keys


def all_identity_keys() -> tuple[str, ...]:
    """Identity members plus the signature member: what egress and policy remove."""
    keys = identity_keys()
    return (*keys, _sig_key)


class IdentityState:
    """The decoded identity of a context, valid while baggage still holds the same values.

    ``local`` is its provenance: True for an identity established in this process
    (``set_identity``/``use_identity``, an edge's own authentication), False for one that
    arrived. Only a local identity, or one whose signature was verified on arrival
    (``identity.verified``), may be signed here (see ``_hops.outgoing_context``).
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
        # ``verified`` is not part of Identity equality, so it is part of the key.
        attributes = _span_attributes(identity, identity.verified, mode)
        self.attributes = (mode, attributes)
        return attributes


@functools.lru_cache(maxsize=4096)
def hash_user(user_id: str) -> str:
    return hashlib.sha256(user_id.encode("utf-8")).hexdigest()


@functools.lru_cache(maxsize=4096)
def _span_attributes(identity: Identity, verified: bool, mode: str) -> dict[str, AttributeValue]:
    """The span attributes of an identity (shared: callers must not mutate the result)."""
    attrs: dict[str, AttributeValue] = {}
    if mode == "none":
        return attrs
    if identity.user_id is not None:
        if mode == "hash":
            attrs[names.USER_HASH] = hash_user(identity.user_id)
        else:
            attrs[names.USER_ID] = identity.user_id
    if identity.tenant_id is not None:
        attrs[names.TENANT_ID] = identity.tenant_id
    if identity.session_id is not None:
        attrs[names.SESSION_ID] = identity.session_id
    if identity.roles:
        attrs[names.USER_ROLES] = identity.roles
    attrs[names.IDENTITY_VERIFIED] = verified
    return attrs


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


class Handoff(UserSlot):
    """An in-process hop that owns its thread while it runs: a thread's ``run``, a pool task.

    The hop runs on exactly the Context the sender captured; what makes it a hop of its own,
    its ``state`` (a HopState) and its own ``current_user`` slot (this object), is kept for
    the thread (see ``_hops.enter``) instead of in a copy of the Context with two more keys:
    copying an OTel Context costs more than all the rest of a thread hop. Since the hop owns
    the thread, whatever runs there meanwhile is part of it. It applies to every context that
    still carries the captured context's hop entry (a span started inside, say), and is their
    user slot while they also carry its slot entry; an identity set inside gets a slot of its
    own, as anywhere. A pool's work item is itself a Handoff, so a pool hop allocates nothing.
    """

    __slots__ = ("outer", "source", "state", "thread_state")
    outer: Handoff | None  # the hand-off this one interrupted in the same thread
    source: Context  # None on a pool task that is not a hop (see otel_identity_threading)
    state: Any  # the hop's HopState, set when it is entered
    thread_state: ThreadState

    def __init__(self, source: Context) -> None:
        self.source = source  # the context the sender captured at hand-off

    # What a slot is asked, derived rather than stored: entering a hop stays three stores.
    @property
    def hop(self) -> str | None:  # type: ignore[override]
        return getattr(self.state, "hop", None)

    @property
    def identity(self) -> Identity | None:  # type: ignore[override]
        state = state_of(self.source)
        return None if state is None else state.identity

    @property
    def thread(self) -> int:  # type: ignore[override]
        return self.thread_state.ident


def current_handoff() -> Handoff | None:
    """The hand-off this thread is running, if any."""
    try:
        state = _per_thread.state
    except AttributeError:  # this thread's first call (a missing attribute is slow every time)
        state = thread_state()
    return state.handoff  # type: ignore[no-any-return]


def hop_of(ctx: Context) -> object:
    """The hop state of ``ctx``: its own entry, or that of the hand-off it runs in."""
    hop = ctx.get(HOP_KEY)
    handoff = current_handoff()
    if handoff is not None and hop is handoff.source.get(HOP_KEY):
        return handoff.state
    return hop


def state_of(ctx: Context) -> IdentityState | None:
    """The identity state of a context (decoding and caching it if baggage was set by others)."""
    baggage = ctx.get(_BAGGAGE_KEY)
    if not baggage:
        return None
    state: IdentityState | None = ctx.get(_STATE_KEY)  # type: ignore[assignment]
    if state is not None and state.baggage is baggage:
        return state
    # (_codec.raw_values, written out: every span under baggage from elsewhere comes here)
    raw = tuple(map(baggage.get, _keys or identity_keys()))  # type: ignore[attr-defined]
    if state is not None and state.raw == raw:
        return state
    if raw == (None, None, None, None):
        return None
    # Baggage set by something other than otel-identity (a plain OTel propagator, say): its
    # provenance is unknown, so it counts only if it passes the inbound policy, and never once
    # the global textmap's baggage step is no longer ours (another parser read the header).
    # The state is shared per identity and settings (spans started under it reuse its
    # attributes).
    if _baggage_propagator.displaced():
        return None
    try:
        cached = _unknown.get(raw)
    except TypeError:  # an unhashable value put in baggage by other code: nothing to share
        return _admitted(baggage, raw)  # type: ignore[arg-type]
    if cached is not None and cached[0] is _config.current:
        return cached[1]
    return _unknown_state(baggage, raw)  # type: ignore[arg-type]


# raw identity values -> (settings, state) for baggage that no otel-identity hop decoded.
_unknown: dict[tuple[object, ...], tuple[_config.Settings, IdentityState | None]] = {}


def _unknown_state(baggage: Mapping[str, object], raw: tuple[object, ...]) -> IdentityState | None:
    """``state_of`` for identity baggage of unknown provenance, remembered except under
    ``verify``, where a signature's expiry is checked every time."""
    settings = _config.get_settings()
    state = _admitted(baggage, raw)
    if settings.effective_inbound != "verify":
        _memo.remember(_unknown, raw, (settings, state))
    return state


def _admitted(baggage: Mapping[str, object], raw: tuple[object, ...]) -> IdentityState | None:
    identity = _policy.admit_unknown(baggage, raw)
    return None if identity is None else IdentityState(raw, identity)


def may_sign(state: IdentityState) -> bool:
    """Whether this process may sign ``state``'s identity: established here, or verified on
    arrival on this hop. An identity admitted on trust never is (trust laundering)."""
    return state.local or state.identity.verified


def is_established(context: Context | None = None) -> bool:
    """Whether the identity of ``context`` may be signed here (see ``may_sign``)."""
    state = state_of(context if context is not None else otel_context.get_current())
    return state is not None and may_sign(state)


def get_identity(context: Context | None = None) -> Identity | None:
    """The identity of ``context`` (default: the current one), or None."""
    state = state_of(context if context is not None else otel_context.get_current())
    return None if state is None else state.identity


def require_identity(context: Context | None = None) -> Identity:
    """Like ``get_identity`` but raises ``MissingIdentityError`` when there is none."""
    identity = get_identity(context)
    if identity is None:
        raise MissingIdentityError("no identity in the current context")
    return identity


_built: dict[tuple[object, ...], Identity] = {}


def build_identity(
    identity: Identity | None,
    user_id: str | None,
    tenant_id: str | None,
    session_id: str | None,
    roles: Iterable[str] | str | None,
) -> Identity:
    """A validated Identity from an Identity or claims (memoized for hashable claims)."""
    if identity is None and (roles is None or type(roles) is tuple):
        key = (user_id, tenant_id, session_id, roles)
        try:
            cached = _built.get(key)
        except TypeError:  # unhashable claims: validation below explains what is wrong
            cached = None
        else:
            if cached is None:
                cached = _build_identity(None, user_id, tenant_id, session_id, roles)
                _memo.remember(_built, key, cached)
        if cached is not None:
            return cached
    return _build_identity(identity, user_id, tenant_id, session_id, roles)


def _build_identity(
    identity: Identity | None,
    user_id: str | None,
    tenant_id: str | None,
    session_id: str | None,
    roles: Iterable[str] | str | None,
) -> Identity:
    if identity is not None:
        if user_id is not None or tenant_id is not None or session_id is not None or roles:
            raise TypeError("pass either an Identity or claims, not both")
        if not isinstance(identity, Identity):
            raise TypeError(f"identity must be an Identity, got {type(identity).__name__}")
        user_id, tenant_id, session_id = identity.user_id, identity.tenant_id, identity.session_id
        roles, verified = identity.roles, identity.verified
    else:
        verified = False
    if isinstance(roles, str):
        roles = (roles,)
    role_tuple = tuple(r for r in (_codec.check_claim("role", r) for r in roles or ()) if r)
    return Identity(
        _codec.check_claim("user_id", user_id),
        _codec.check_claim("tenant_id", tenant_id),
        _codec.check_claim("session_id", session_id),
        role_tuple,
        verified,
    )


def with_identity(
    ctx: Context,
    identity: Identity | None,
    *,
    hop: object = None,
    slot_hop: str | None = None,
) -> Context:
    """One new Context: identity members first in baggage, fresh state and user slot.

    ``hop`` (a HopState) is set too when given, so a receiving hop builds its context with a
    single copy instead of one per key.
    """
    keys = _keys or identity_keys()
    old = cast("Mapping[str, object]", ctx.get(_BAGGAGE_KEY) or {})
    values: dict[str, object] = dict(ctx)
    if identity is None or identity.is_empty:
        baggage = {k: v for k, v in old.items() if k not in keys and k != _sig_key}
        values.pop(_STATE_KEY, None)
        values.pop(_SLOT_KEY, None)
    else:
        baggage = cast("dict[str, object]", _codec.members(identity, keys))
        raw = _codec.raw_values(baggage, keys)
        for key, value in old.items():
            if key not in keys and key != _sig_key:
                baggage[key] = value
        values[_STATE_KEY] = IdentityState(raw, identity, baggage, local=True)
        values[_SLOT_KEY] = UserSlot(slot_hop, identity)
    values[_BAGGAGE_KEY] = baggage
    if hop is not None:
        values[HOP_KEY] = hop
    return Context(values)


def set_identity(
    identity: Identity | None = None,
    *,
    user_id: str | None = None,
    tenant_id: str | None = None,
    session_id: str | None = None,
    roles: Iterable[str] | str | None = (),
    context: Context | None = None,
) -> Context:
    """A new Context whose baggage carries the identity; ``context`` is never mutated.

    Either pass an ``Identity`` or its claims. Raises ``TypeError``/``ValueError`` for values
    that cannot travel (non-strings, control characters, more than 1024 characters): those are
    programming errors of the caller, not bad input from the wire.
    """
    ident = build_identity(identity, user_id, tenant_id, session_id, roles)
    ctx = context if context is not None else otel_context.get_current()
    return with_identity(ctx, ident, slot_hop=getattr(hop_of(ctx), "hop", None))


def clear_identity(context: Context | None = None) -> Context:
    """A new Context without identity members (other baggage is kept)."""
    ctx = context if context is not None else otel_context.get_current()
    return with_identity(ctx, None)


def user_slot(ctx: Context) -> UserSlot | None:
    """The user slot of ``ctx``: its own, or the hand-off's it runs in (see Handoff)."""
    slot: UserSlot | None = ctx.get(_SLOT_KEY)  # type: ignore[assignment]
    handoff = current_handoff()
    if handoff is not None:
        source = handoff.source
        if slot is source.get(_SLOT_KEY) and ctx.get(HOP_KEY) is source.get(HOP_KEY):
            return handoff
    return slot


class use_identity:  # noqa: N801 - reads as a verb, like contextlib.suppress
    """Run a block or a function under an identity, and restore what was there after.

        with oi.use_identity(user_id="u-1", tenant_id="acme"):
            ...

        @oi.use_identity(user_id="system", roles=["batch"])
        async def nightly() -> None: ...

    Works as a context manager (``with`` and ``async with``) and as a decorator of sync and
    async functions; each call of a decorated function attaches its own context, so concurrent
    calls never see each other's state. ``use_identity()`` without arguments runs with none.
    """

    def __init__(self, identity: Identity | None = None, **claims: Any) -> None:
        unknown = set(claims) - {"user_id", "tenant_id", "session_id", "roles"}
        if unknown:
            raise TypeError(f"unknown claim(s): {', '.join(sorted(unknown))}")
        self._identity = build_identity(
            identity,
            claims.get("user_id"),
            claims.get("tenant_id"),
            claims.get("session_id"),
            claims.get("roles", ()),
        )
        self._tokens: list[object] = []
        self._lock = threading.Lock()

    def _attach(self) -> object:
        ctx = otel_context.get_current()
        return otel_context.attach(
            with_identity(ctx, self._identity, slot_hop=getattr(hop_of(ctx), "hop", None))
        )

    def __enter__(self) -> Identity | None:
        token = self._attach()
        with self._lock:
            self._tokens.append(token)
        return None if self._identity.is_empty else self._identity

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            token = self._tokens.pop()
        otel_context.detach(token)  # type: ignore[arg-type]

    async def __aenter__(self) -> Identity | None:
        return self.__enter__()

    async def __aexit__(self, *exc_info: object) -> None:
        self.__exit__(*exc_info)

    def __call__(self, fn: F) -> F:
        if asyncio.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                token = self._attach()
                try:
                    return await fn(*args, **kwargs)
                finally:
                    otel_context.detach(token)  # type: ignore[arg-type]

            return cast("F", run_async)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            token = self._attach()
            try:
                return fn(*args, **kwargs)
            finally:
                otel_context.detach(token)  # type: ignore[arg-type]

        return cast("F", run)
