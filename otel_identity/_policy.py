"""Inbound policy: which identity a receiving hop may believe.

``trust`` takes baggage identity as is; ``verify`` takes it only with a valid ``identity.sig``;
``strip`` ignores it (an edge service, whose identity comes from its own authentication).
In-process hops (threads, our own child processes) cross no trust boundary and always trust.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Mapping

from otel_identity import _codec, _config, _keys, _memo, _signing, names
from otel_identity._identity import Identity

IN_PROCESS_HOPS = frozenset({names.HOP_THREAD, names.HOP_PROCESS})


_decoded: dict[tuple[object, ...], tuple[Identity | None, str | None]] = {}


def _decode(raw: tuple[object, ...]) -> tuple[Identity | None, str | None]:
    """Decode and check the claims; memoized, since the same identity arrives again and again."""
    cached = _decoded.get(raw)
    if cached is not None:
        return cached
    identity = _codec.decode_identity(raw)
    result: tuple[Identity | None, str | None] = (identity, None)
    if identity is not None and not _codec.acceptable_identity(identity):
        result = (None, names.REASON_MALFORMED)
    return _memo.remember(_decoded, raw, result)


def admit(
    baggage: Mapping[str, object],
    raw: tuple[object, ...],
    policy: str,
    settings: _config.Settings,
) -> tuple[Identity | None, str | None]:
    """(admitted identity or None, reject reason or None) for the identity in ``raw``."""
    if raw == (None, None, None, None):
        return None, None
    if policy == "strip":
        return None, names.REASON_UNTRUSTED
    try:
        identity, reason = _decode(raw)
    except TypeError:  # an unhashable value put in baggage by other code: nothing to admit
        return None, names.REASON_MALFORMED
    if identity is None:
        return None, reason
    if policy == "verify":
        keys = _keys.current_keys(settings)
        reason = _signing.verify(baggage.get(settings.sig_key), identity, keys)
        if reason is not None:
            return None, reason
        identity = Identity(*identity.claims(), verified=True)
    return identity, None


def policy_for(hop: str, settings: _config.Settings) -> str:
    return "trust" if hop in IN_PROCESS_HOPS else settings.effective_inbound


def admit_unknown(baggage: Mapping[str, object], raw: tuple[object, ...]) -> Identity | None:
    """Identity found in baggage that no otel-identity hop or verb put there."""
    settings = _config.get_settings()
    return admit(baggage, raw, settings.effective_inbound, settings)[0]


@functools.lru_cache(maxsize=1024)
def _route_matches(route: str, patterns: tuple[str, ...]) -> bool:
    return any(route == p or fnmatch.fnmatchcase(route, p) for p in patterns)


def is_anonymous_route(route: str | None, settings: _config.Settings | None = None) -> bool:
    """Whether ``route`` (a path or a gRPC method) is exempt from requiring identity."""
    if not route:
        return False
    patterns = (settings or _config.get_settings()).anonymous_routes
    return bool(patterns) and _route_matches(route, patterns)
