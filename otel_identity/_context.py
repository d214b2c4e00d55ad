"""Identity in a Context: the manual baggage API.

    import otel_identity as oi

    with oi.use_identity(user_id="u-42", tenant_id="acme"):
        assert oi.get_identity().user_id == "u-42"
        requests.get(url)          # any OTel propagation carries it as W3C baggage

``set_identity``/``clear_identity`` return new contexts, ``use_identity`` attaches one for a
block or a function, ``get_identity``/``require_identity``/``is_established`` read one. What
a context keeps next to its baggage (the decoded identity, the user slot) is ``_state``.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, cast

from opentelemetry import context as otel_context
from opentelemetry.context import Context

from otel_identity import _codec, _memo
from otel_identity._errors import MissingIdentityError
from otel_identity._handoff import hop_of
from otel_identity._identity import Identity
from otel_identity._internals import BAGGAGE_KEY
from otel_identity._runtime import current_context
from otel_identity._state import (
    HOP_KEY,
    SLOT_KEY,
    STATE_KEY,
    IdentityState,
    UserSlot,
    identity_keys,
    identity_of,
    may_sign,
    sig_key,
    state_of,
)

F = TypeVar("F", bound=Callable[..., Any])


def is_established(context: Context | None = None) -> bool:
    """Whether the identity of ``context`` may be signed here (see ``may_sign``)."""
    state = state_of(context if context is not None else current_context())
    return state is not None and may_sign(state)


def get_identity(context: Context | None = None) -> Identity | None:
    """The identity of ``context`` (default: the current one), or None."""
    return identity_of(context if context is not None else current_context())


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
    keys = identity_keys()
    sig = sig_key()
    old = cast("Mapping[str, object]", ctx.get(BAGGAGE_KEY) or {})
    values: dict[str, object] = dict(ctx)
    if identity is None or identity.is_empty:
        baggage = {k: v for k, v in old.items() if k not in keys and k != sig}
        values.pop(STATE_KEY, None)
        values.pop(SLOT_KEY, None)
    else:
        baggage = cast("dict[str, object]", _codec.members(identity, keys))
        raw = _codec.raw_values(baggage, keys)
        for key, value in old.items():
            if key not in keys and key != sig:
                baggage[key] = value
        values[STATE_KEY] = IdentityState(raw, identity, baggage, local=True)
        values[SLOT_KEY] = UserSlot(slot_hop, identity)
    values[BAGGAGE_KEY] = baggage
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
    ctx = context if context is not None else current_context()
    return with_identity(ctx, ident, slot_hop=getattr(hop_of(ctx), "hop", None))


def clear_identity(context: Context | None = None) -> Context:
    """A new Context without identity members (other baggage is kept)."""
    ctx = context if context is not None else current_context()
    return with_identity(ctx, None)


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
