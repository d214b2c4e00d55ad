"""Signed identity: the ``identity.sig`` baggage member.

    token = "v1.<kid>.<exp>.<mac>"      # HMAC-SHA256, an ``oct`` key
    token = "v2.<kid>.<exp>.<sig>"      # Ed25519, an ``OKP`` key

``exp`` is the expiry in whole minutes since the Unix epoch, in decimal without leading zeros.
``mac``/``sig`` is the unpadded base64url of the HMAC-SHA256 (32 bytes, 43 characters) or the
Ed25519 signature (64 bytes, 86 characters), under the key ``kid``, of the canonical message:
the JSON array ``[version, kid, exp, user_id, tenant_id, session_id, [roles...]]`` with compact
separators and ASCII escapes (absent claims are ``null``), UTF-8. Any language rebuilds it byte
for byte; ``docs/trust.md`` spells it out and ``tests/vectors/signing.json`` has examples.

A token's version must match its key's type (``v1`` an ``oct`` key, ``v2`` an Ed25519 key),
else it is ``unknown_key``. Anything that is not exactly this shape is ``malformed``: verifying
never raises, whatever arrives. Both directions are cached, so a repeated identity costs one
dict lookup to sign and a repeated token one to verify; the caches are keyed by the key set's
generation, which a reload never reuses.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import time

from otel_identity import _memo, names
from otel_identity._identity import Identity
from otel_identity._keys import (
    KID_PATTERN,
    Key,
    KeySet,
    Settings,
    current_generation,
    generation_of,
)

Claims = tuple[str | None, str | None, str | None, tuple[str, ...]]

_SIG_CHARS = {"v1": 43, "v2": 86}  # unpadded base64url of 32 and 64 bytes
_KIND = {"v1": "oct", "v2": "ed25519"}
# The longest well-formed token (v2, 64-character kid, 12-digit exp) is 167 characters; the
# rest of the bound leaves room for W3C properties after it.
MAX_TOKEN_CHARS = 1024
_TOKEN = re.compile(
    r"(v[12])\.(" + KID_PATTERN.pattern + r")\.(0|[1-9][0-9]{0,11})\.([A-Za-z0-9_-]{43,86})"
)

# (claims, generation, kid, lifetime) -> (token, exp minutes)
_sign_cache: dict[tuple[object, ...], tuple[str, int]] = {}
# (token, claims, generation) -> (exp minutes, reason or None)
_verify_cache: dict[tuple[object, ...], tuple[int, str | None]] = {}


def canonical(version: str, kid: str, exp: int, claims: Claims) -> bytes:
    """The signed message: what both token versions sign, and other languages rebuild."""
    user, tenant, session, roles = claims
    return json.dumps(
        [version, kid, exp, user, tenant, session, list(roles)],
        separators=(",", ":"),
        ensure_ascii=True,
    ).encode("ascii")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _signature(key: Key, message: bytes) -> bytes:
    if key.kind == "oct":
        return hmac.new(key.material, message, hashlib.sha256).digest()
    private = key.material[0]
    signature: bytes = private.sign(message)
    return signature


def _now_minutes() -> float:
    return time.time() / 60.0


def now_minutes() -> float:
    """The time signatures are judged by, in minutes since the Unix epoch (tests set it)."""
    return _now_minutes()


def in_force(until: float, generation: int, settings: Settings) -> bool:
    """Whether something decided by a signature under key set ``generation`` still holds:
    before ``until`` (minutes since the epoch) and while that key set is in force."""
    return now_minutes() < until and current_generation(settings) == generation


def mint(identity: Identity, keys: KeySet, ttl_seconds: int) -> str | None:
    """A token for the identity's claims under the key set's minting key (None: it has none)."""
    minted_token = minted(identity, keys, ttl_seconds)
    return None if minted_token is None else minted_token[0]


def minted(identity: Identity, keys: KeySet, ttl_seconds: int) -> tuple[str, float] | None:
    """(token, when to renew it in minutes since the epoch) for the identity's claims under
    the key set's minting key (None: it has none).

    A token is reused until half its life is gone (its renewal time); a lifetime of its own
    per TTL, so a queue hop's long-lived token never stands in for a synchronous hop's short
    one.
    """
    key = keys.minter
    if key is None:
        return None
    claims = identity.claims()
    lifetime = max(1, (ttl_seconds + 59) // 60)
    cache_key = (claims, keys.generation, key.kid, lifetime)
    now = _now_minutes()
    cached = _sign_cache.get(cache_key)
    if cached is None or cached[1] - now <= lifetime / 2:
        exp = int(now) + lifetime
        version = key.version
        signature = _signature(key, canonical(version, key.kid, exp, claims))
        token = f"{version}.{key.kid}.{exp}.{_b64(signature)}"
        cached = _memo.remember(_sign_cache, cache_key, (token, exp))
    token, exp = cached
    return token, exp - lifetime / 2


def verify(token: object, identity: Identity, keys: KeySet | None) -> str | None:
    """None when ``token`` is a valid, unexpired signature of the claims; else the reason."""
    return verdict(token, identity, keys)[0]


def verdict(token: object, identity: Identity, keys: KeySet | None) -> tuple[str | None, int]:
    """(``verify``'s reason, the token's expiry in minutes since the epoch, 0 unless valid)."""
    if token is None or token == "":
        return names.REASON_UNTRUSTED, 0
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        return names.REASON_MALFORMED, 0
    claims = identity.claims()
    cache_key = (token, claims, generation_of(keys))
    cached = _verify_cache.get(cache_key)
    if cached is None:
        cached = _memo.remember(_verify_cache, cache_key, _verify_uncached(token, claims, keys))
    exp, reason = cached
    if reason is None and exp <= _now_minutes():
        return names.REASON_EXPIRED, 0
    return reason, exp


def parse(token: str) -> tuple[str, str, int, bytes] | None:
    """(version, kid, exp, signature bytes) of a well-formed token, else None.

    W3C properties (``;name=value``) and the optional whitespace around a value are not part
    of the token; everything else must be exactly the canonical shape: one spelling per token.
    """
    if ";" in token:
        token = token.split(";", 1)[0]
    token = token.strip(" \t")
    match = _TOKEN.fullmatch(token)  # (its character classes are ASCII only)
    if match is None:
        return None
    version, kid, exp_text, text = match.groups()
    if len(text) != _SIG_CHARS[version]:
        return None
    try:
        signature = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    if _b64(signature) != text:  # spare bits set: another spelling of the same bytes
        return None
    return version, kid, int(exp_text), signature


def _verify_uncached(token: str, claims: Claims, keys: KeySet | None) -> tuple[int, str | None]:
    parsed = parse(token)
    if parsed is None:
        return 0, names.REASON_MALFORMED
    version, kid, exp, signature = parsed
    key = None if keys is None else keys.get(kid)
    if key is None or key.kind != _KIND[version]:
        return 0, names.REASON_UNKNOWN_KEY
    message = canonical(version, kid, exp, claims)
    if key.kind == "oct":
        expected = hmac.new(key.material, message, hashlib.sha256).digest()
        valid = hmac.compare_digest(expected, signature)
    else:
        valid = _ed25519_valid(key, signature, message)
    return (exp, None) if valid else (0, names.REASON_BAD_SIGNATURE)


def _ed25519_valid(key: Key, signature: bytes, message: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        key.material[1].verify(signature, message)
    except InvalidSignature:
        return False
    return True


def new_key() -> str:
    """A fresh 256-bit signing key, base64 (the format of ``OTEL_IDENTITY_SIGNING_KEYS``)."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def new_kid() -> str:
    """A fresh key id (``k`` and six hex digits)."""
    return f"k{secrets.token_hex(3)}"
