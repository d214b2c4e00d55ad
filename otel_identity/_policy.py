"""Inbound policy: which identity a receiving hop may believe.

``trust`` takes baggage identity as is; ``verify`` takes it only with a valid ``identity.sig``;
``strip`` ignores it (an edge service, whose identity comes from its own authentication).
In-process hops (threads, our own child processes) cross no trust boundary and always trust.
"""

from __future__ import annotations

import fnmatch
import functools
import math
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
    identity, reason, _until = admission(baggage, raw, policy, settings)
    return identity, reason


# A verdict that no clock changes: the same header under the same settings and key set.
FOREVER = math.inf
# Rejections that the same token, claims and key set always get again (``expired`` is left
# out: a clock stepped back would make it valid again).
_LASTING_REJECTIONS = frozenset(
    {
        names.REASON_UNTRUSTED,
        names.REASON_MALFORMED,
        names.REASON_UNKNOWN_KEY,
        names.REASON_BAD_SIGNATURE,
    }
)


def admission(
    baggage: Mapping[str, object],
    raw: tuple[object, ...],
    policy: str,
    settings: _config.Settings,
) -> tuple[Identity | None, str | None, float]:
    """``admit``'s verdict and until when it holds, in minutes since the Unix epoch:
    ``FOREVER`` unless a signature decided it (then its expiry, or 0: judge it again)."""
    if raw == (None, None, None, None):
        return None, None, FOREVER
    if policy == "strip":
        return None, names.REASON_UNTRUSTED, FOREVER
    try:
        identity, reason = _decode(raw)
    except TypeError:  # an unhashable value put in baggage by other code: nothing to admit
        return None, names.REASON_MALFORMED, FOREVER
    if identity is None or policy != "verify":
        return identity, reason, FOREVER
    return _verified(identity, baggage.get(settings.sig_key), settings)


def _verified(
    identity: Identity, token: object, settings: _config.Settings
) -> tuple[Identity | None, str | None, float]:
    """``identity`` verified by ``token`` under the key set in force, and until when."""
    reason, exp = _signing.verdict(token, identity, _keys.current_keys(settings))
    if reason is None:
        return Identity(*identity.claims(), verified=True), None, exp
    return None, reason, (FOREVER if reason in _LASTING_REJECTIONS else 0.0)


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
