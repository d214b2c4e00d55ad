"""Signed identity: the ``identity.sig`` baggage member.

    token = "v1.<kid>.<exp>.<mac>"

``exp`` is the expiry in whole minutes since the Unix epoch; ``mac`` is the unpadded base64url
HMAC-SHA256, under the key ``kid``, of the canonical JSON array
``["v1", kid, exp, user_id, tenant_id, session_id, [roles...]]`` (compact separators, ASCII
escapes; absent claims are ``null``), which any language can rebuild byte for byte.

Several keys may be active: the first configured key signs, all of them verify (rotation).
Both directions are cached, so a repeated identity costs one dict lookup to sign and a
repeated token one to verify.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping

from otel_identity import _memo, names
from otel_identity._identity import Identity

_VERSION = "v1"
# (claims, kid, key) -> (token, exp minutes); (token, claims) -> (exp minutes, reason or None)
_sign_cache: dict[tuple[object, ...], tuple[str, int]] = {}
_verify_cache: dict[tuple[object, ...], tuple[int, str | None]] = {}


def _mac(key: bytes, kid: str, exp: int, claims: tuple[object, ...]) -> str:
    user, tenant, session, roles = claims
    message = json.dumps(
        [_VERSION, kid, exp, user, tenant, session, list(roles)],  # type: ignore[call-overload]
        separators=(",", ":"),
        ensure_ascii=True,
    ).encode("ascii")
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _now_minutes() -> float:
    return time.time() / 60.0


def sign(identity: Identity, keys: Mapping[str, bytes], ttl_seconds: int) -> str:
    """A token for the identity's claims under the first key; reused until half its life."""
    kid, key = next(iter(keys.items()))
    claims = identity.claims()
    cache_key = (claims, kid, key)
    now = _now_minutes()
    cached = _sign_cache.get(cache_key)
    lifetime = max(1, (ttl_seconds + 59) // 60)
    if cached is not None and cached[1] - now > lifetime / 2:
        return cached[0]
    exp = int(now) + lifetime
    token = f"{_VERSION}.{kid}.{exp}.{_mac(key, kid, exp, claims)}"
    _memo.remember(_sign_cache, cache_key, (token, exp))
    return token


def verify(token: object, identity: Identity, keys: Mapping[str, bytes]) -> str | None:
    """None when ``token`` is a valid, unexpired signature of the claims; else the reason."""
    if not isinstance(token, str) or not token:
        return names.REASON_UNTRUSTED
    claims = identity.claims()
    cache_key = (token, claims, id(keys))
    cached = _verify_cache.get(cache_key)
    if cached is None:
        cached = _memo.remember(_verify_cache, cache_key, _verify_uncached(token, claims, keys))
    exp, reason = cached
    if reason is None and exp <= _now_minutes():
        return names.REASON_EXPIRED
    return reason


def _verify_uncached(
    token: str, claims: tuple[object, ...], keys: Mapping[str, bytes]
) -> tuple[int, str | None]:
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != _VERSION or not parts[2].isdigit() or len(parts[2]) > 12:
        return 0, names.REASON_MALFORMED
    _, kid, exp_text, mac = parts
    key = keys.get(kid)
    if key is None:
        return 0, names.REASON_UNKNOWN_KEY
    exp = int(exp_text)
    if not hmac.compare_digest(_mac(key, kid, exp, claims), mac):
        return 0, names.REASON_BAD_SIGNATURE
    return exp, None


def new_key() -> str:
    """A fresh 256-bit signing key, base64 (the format of ``OTEL_IDENTITY_SIGNING_KEYS``)."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")
