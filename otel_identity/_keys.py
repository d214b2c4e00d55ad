"""Signing keys: HMAC keys from ``signing_keys`` and a JWK Set (RFC 7517) in ``keys_file``.

    OTEL_IDENTITY_KEYS_FILE=/run/secrets/identity-keys.json   # {"keys": [{"kty": "OKP", ...}]}

    keys = current_keys(settings)      # None when no key is configured
    keys.minter                        # the key this service signs with, or None (verify only)
    keys.get(kid)                      # any key verifies

Two key types, each bound to one token version: ``oct`` keys (HMAC-SHA256) sign and verify
``v1`` tokens only; ``OKP``/``Ed25519`` keys sign (with ``d``, the private key) and verify
``v2`` tokens only. A service's role follows from what it holds: the first key, in order
(the keys file first, then ``signing_keys``), that can mint mints; every key verifies.

The keys file is re-read when it changes (mounted secrets rotate in place), checked at most
every ``CHECK_INTERVAL`` seconds from the hop that happens to come along: a monotonic clock
read per hop, a ``stat`` every couple of seconds, a read only when the file changed. A file
that cannot be used at run time is logged once and leaves an empty key set (fail closed:
nothing minted, nothing verified) until it is fixed; at configure time it is a
``ConfigurationError``.

Key material never appears in a ``repr``, a log line or an error message: only key ids do.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from otel_identity._errors import ConfigurationError


class Settings(Protocol):
    """What the key set is read from: the two key settings of ``_config.Settings`` (named here,
    so reading keys needs nothing else of the settings)."""

    @property
    def signing_keys(self) -> Mapping[str, bytes]: ...

    @property
    def keys_file(self) -> str | None: ...


KID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
MIN_HMAC_BYTES = 16
ED25519_BYTES = 32
# A keys file holds a handful of keys; a bound keeps a wrong path (a log, a dump) cheap.
MAX_FILE_CHARS = 1 << 20
# How often, at most, the keys file is looked at again (the contract is 10 seconds).
CHECK_INTERVAL = 2.0
ED25519_EXTRA = "otel-identity[ed25519]"

# Every key set gets a number never given to another in this process: caches are keyed by it,
# so a reloaded set can never be mistaken for the one before (``id()`` of a freed object can).
_generations = itertools.count(1)


def valid_kid(kid: object) -> bool:
    return isinstance(kid, str) and KID_PATTERN.fullmatch(kid) is not None


class HmacKeys(Mapping[str, bytes]):
    """``signing_keys``: kid -> HMAC key bytes, in order. Shows key ids only, never bytes."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Mapping[str, bytes] | None = None) -> None:
        self._keys = dict(keys or {})

    def __getitem__(self, kid: str) -> bytes:
        return self._keys[kid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __hash__(self) -> int:
        return hash(tuple(self._keys.items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self.items()) == dict(other.items())

    def __repr__(self) -> str:
        return f"HmacKeys(kids={list(self._keys)!r})"


class Key:
    """One verification (and maybe minting) key. Its repr names the kid and type only."""

    __slots__ = ("_material", "kid", "kind", "private")

    def __init__(self, kid: str, kind: str, material: Any, *, private: bool) -> None:
        self.kid = kid
        self.kind = kind  # "oct" (v1 tokens) or "ed25519" (v2 tokens)
        self.private = private  # can mint: every oct key, an Ed25519 key with ``d``
        # HMAC: the key bytes. Ed25519: (private key or None, public key) objects.
        self._material = material

    @property
    def version(self) -> str:
        return "v1" if self.kind == "oct" else "v2"

    @property
    def material(self) -> Any:
        return self._material

    def __repr__(self) -> str:
        role = "mint+verify" if self.private else "verify"
        return f"Key(kid={self.kid!r}, kind={self.kind!r}, {role})"


class KeySet:
    """The keys in force: looked up by kid; ``minter`` signs (None: this service verifies only).

    Immutable; a reload builds a new one with a new ``generation``."""

    __slots__ = ("broken", "generation", "keys", "minter")

    def __init__(self, keys: list[Key], *, broken: bool = False) -> None:
        self.keys: dict[str, Key] = {key.kid: key for key in keys}
        self.minter: Key | None = next((key for key in keys if key.private), None)
        self.broken = broken  # a keys file that could not be used: nothing mints or verifies
        self.generation = next(_generations)

    def get(self, kid: str) -> Key | None:
        return self.keys.get(kid)

    def __repr__(self) -> str:
        minter = self.minter.kid if self.minter else None
        return f"KeySet(kids={list(self.keys)!r}, minter={minter!r}, broken={self.broken})"


# --- parsing --------------------------------------------------------------------------------


def _b64url(value: object, what: str, kid: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"key {kid!r}: {what} must be a base64url string")
    text = value.rstrip("=")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", text) or len(text) % 4 == 1:
        raise ConfigurationError(f"key {kid!r}: {what} is not valid base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ConfigurationError(f"key {kid!r}: {what} is not valid base64url") from None


def _ed25519() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise ConfigurationError(
            f"Ed25519 keys need the 'cryptography' package: pip install '{ED25519_EXTRA}'"
        ) from None
    return ed25519


def ed25519_available() -> bool:
    try:
        _ed25519()
    except ConfigurationError:
        return False
    return True


def _okp_key(jwk: Mapping[str, Any], kid: str) -> Key:
    if jwk.get("crv") != "Ed25519":
        raise ConfigurationError(f"key {kid!r}: OKP keys must have crv 'Ed25519'")
    if jwk.get("alg") not in (None, "EdDSA", "Ed25519"):
        raise ConfigurationError(f"key {kid!r}: alg of an Ed25519 key must be 'EdDSA'")
    x = _b64url(jwk.get("x"), "x", kid)
    if len(x) != ED25519_BYTES:
        raise ConfigurationError(f"key {kid!r}: x must be {ED25519_BYTES} bytes")
    d = None
    if "d" in jwk:
        d = _b64url(jwk["d"], "d", kid)
        if len(d) != ED25519_BYTES:
            raise ConfigurationError(f"key {kid!r}: d must be {ED25519_BYTES} bytes")
    ed25519 = _ed25519()
    try:
        public = ed25519.Ed25519PublicKey.from_public_bytes(x)
        private = None if d is None else ed25519.Ed25519PrivateKey.from_private_bytes(d)
    except (ValueError, TypeError):  # (its message is not echoed: it may quote the bytes)
        raise ConfigurationError(f"key {kid!r}: not a valid Ed25519 key") from None
    if private is not None and public_bytes(private.public_key()) != x:
        raise ConfigurationError(f"key {kid!r}: d does not belong to x")
    return Key(kid, "ed25519", (private, public), private=private is not None)


def _oct_key(jwk: Mapping[str, Any], kid: str) -> Key:
    if jwk.get("alg") not in (None, "HS256"):
        raise ConfigurationError(f"key {kid!r}: alg of an oct key must be 'HS256'")
    secret = _b64url(jwk.get("k"), "k", kid)
    if len(secret) < MIN_HMAC_BYTES:
        raise ConfigurationError(f"key {kid!r}: k is shorter than {MIN_HMAC_BYTES} bytes")
    return Key(kid, "oct", secret, private=True)


def _jwk(jwk: object, index: int) -> Key:
    if not isinstance(jwk, Mapping):
        raise ConfigurationError(f"keys[{index}] is not a JSON object")
    kid = jwk.get("kid")
    if not valid_kid(kid):
        # (never echo it: a misplaced secret must not reach a log)
        raise ConfigurationError(f"keys[{index}]: kid must match {KID_PATTERN.pattern}")
    assert isinstance(kid, str)
    if jwk.get("use") not in (None, "sig"):
        raise ConfigurationError(f"key {kid!r}: use must be 'sig'")
    kty = jwk.get("kty")
    if kty == "oct":
        return _oct_key(jwk, kid)
    if kty == "OKP":
        return _okp_key(jwk, kid)
    raise ConfigurationError(f"key {kid!r}: unsupported kty (oct and OKP/Ed25519 only)")


def parse_jwks(text: str) -> list[Key]:
    """The keys of a JWK Set, in order; ``ConfigurationError`` on anything unexpected."""
    try:
        document = json.loads(text)
    except ValueError as exc:  # (its message has a position, never the content)
        raise ConfigurationError(f"not JSON: {exc}") from None
    except RecursionError:
        raise ConfigurationError("not JSON: nested too deeply") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ConfigurationError('a JWK Set is a JSON object with a "keys" array')
    keys = [_jwk(jwk, index) for index, jwk in enumerate(document["keys"])]
    _check_unique(keys)
    return keys


def _check_unique(keys: list[Key]) -> None:
    seen: set[str] = set()
    for key in keys:
        if key.kid in seen:
            raise ConfigurationError(f"duplicate key id {key.kid!r}")
        seen.add(key.kid)


def read_jwks(path: str) -> list[Key]:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read(MAX_FILE_CHARS + 1)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read {path!r}: {type(exc).__name__}") from None
    if len(text) > MAX_FILE_CHARS:
        raise ConfigurationError(f"keys file {path!r}: larger than {MAX_FILE_CHARS} characters")
    try:
        return parse_jwks(text)
    except ConfigurationError as exc:
        raise ConfigurationError(f"keys file {path!r}: {exc}") from None


def hmac_keys(signing_keys: Mapping[str, bytes]) -> list[Key]:
    return [Key(kid, "oct", secret, private=True) for kid, secret in signing_keys.items()]


def load(settings: Settings) -> KeySet | None:
    """The key set of ``settings``, read now; raises ``ConfigurationError`` (configure time)."""
    if not settings.keys_file and not settings.signing_keys:
        return None
    from_file = read_jwks(settings.keys_file) if settings.keys_file else []
    keys = [*from_file, *hmac_keys(settings.signing_keys)]
    _check_unique(keys)
    return KeySet(keys)


def public_bytes(public: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    raw: bytes = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def new_ed25519_jwks(kid: str) -> dict[str, Any]:
    """A JWK Set with one new Ed25519 private key (what ``keygen --ed25519`` prints)."""
    from cryptography.hazmat.primitives import serialization

    private = _ed25519().Ed25519PrivateKey.generate()
    d = private.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    x = public_bytes(private.public_key())
    jwk = {"kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA", "use": "sig"}
    return {"keys": [{**jwk, "x": _encode(x), "d": _encode(d)}]}


def public_jwks(keys: list[Key]) -> dict[str, Any]:
    """The public JWK Set of ``keys``: Ed25519 public keys only (no ``oct`` key, no ``d``)."""
    out = []
    for key in keys:
        if key.kind != "ed25519":
            continue
        x = _encode(public_bytes(key.material[1]))
        jwk = {"kty": "OKP", "crv": "Ed25519", "kid": key.kid, "alg": "EdDSA", "use": "sig"}
        out.append({**jwk, "x": x})
    return {"keys": out}


# --- the keys in force, re-read as the file changes -----------------------------------------


class _Ring:
    """The key set of one settings object, following its keys file."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lock = threading.Lock()
        self.stamp: tuple[int, ...] | None = None
        self.next_check = 0.0
        self.keys = KeySet(hmac_keys(settings.signing_keys))
        if settings.keys_file:
            self._reload()

    def current(self) -> KeySet:
        if not self.settings.keys_file or self.next_check > time.monotonic():
            return self.keys
        if self.lock.acquire(blocking=False):  # one hop looks; the others use what is there
            try:
                self._reload()
            finally:
                self.lock.release()
        return self.keys

    def _reload(self) -> None:
        path = self.settings.keys_file
        assert path is not None
        self.next_check = time.monotonic() + CHECK_INTERVAL
        try:
            info = os.stat(path)
        except OSError as exc:
            self._broken(path, type(exc).__name__)
            return
        stamp = (info.st_ino, info.st_dev, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        if stamp == self.stamp:
            return
        try:
            from_file = read_jwks(path)
            keys = [*from_file, *hmac_keys(self.settings.signing_keys)]
            _check_unique(keys)
        except ConfigurationError as exc:
            self._broken(path, str(exc))
            self.stamp = stamp  # the same broken file is not read again every check
            return
        self.stamp = stamp
        self.keys = KeySet(keys)
        logger.info("otel-identity: keys file %r loaded (key ids %s)", path, list(self.keys.keys))

    def _broken(self, path: str, why: str) -> None:
        if not self.keys.broken:
            logger.error(
                "otel-identity: keys file %r is unusable (%s); nothing is signed or verified "
                "until it is fixed",
                path,
                why,
            )
        self.stamp = None
        self.keys = KeySet([], broken=True)


logger = logging.getLogger("otel_identity")
_ring: _Ring | None = None
_ring_lock = threading.Lock()


def current_keys(settings: Settings) -> KeySet | None:
    """The key set in force for ``settings`` (None when none is configured). Never raises."""
    ring = _ring
    if ring is not None and ring.settings is settings:
        return ring.current()
    if not settings.keys_file and not settings.signing_keys:
        return None
    return _new_ring(settings).current()


def generation_of(keys: KeySet | None) -> int:
    """The key set's generation; 0, which no key set has, for none."""
    return 0 if keys is None else keys.generation


def current_generation(settings: Settings) -> int:
    """The generation of the key set in force for ``settings`` (a reload makes a new one)."""
    return generation_of(current_keys(settings))


def _new_ring(settings: Settings) -> _Ring:
    global _ring
    with _ring_lock:
        ring = _ring
        if ring is None or ring.settings is not settings:
            ring = _Ring(settings)
            _ring = ring
    return ring
