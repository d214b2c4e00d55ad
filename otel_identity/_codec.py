"""Identity <-> baggage members, and the W3C limits.

Identity members are plain baggage entries, so any OpenTelemetry SDK carries and reads them.
Two facts of the wire decide the encoding (see ``tests/core/test_codec.py``):

* OpenTelemetry Python encodes values with ``quote_plus`` (a space becomes ``+``) while the
  W3C spec and other SDKs percent-decode without turning ``+`` into a space; it also strips
  surrounding whitespace and treats ``;`` as the start of metadata after decoding.
* So the in-process value escapes exactly the characters on which the two decoders disagree
  or which OpenTelemetry would lose: ``%``, ``;``, and whitespace (plus ``,`` inside a role).
  Every other value, which is every ordinary id, is stored and sent unchanged.

Both OpenTelemetry's propagator and a spec-compliant percent-decoder followed by
``decode_value`` give back the exact original string.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote, quote_plus, unquote

from otel_identity._identity import Identity

# W3C baggage minimums a platform must propagate; above them members may be dropped, and we
# choose which: never identity members.
MAX_MEMBERS = 64
MAX_BYTES = 8192
# OpenTelemetry Python drops a single member above this many bytes, on inject and extract.
MAX_MEMBER_BYTES = 4096
# An identity value longer than this (decoded) is refused: no real id is this long, and a
# bound keeps hostile input cheap to handle.
MAX_VALUE_CHARS = 1024

_ESCAPE = re.compile(r"[%;\s]")
_ESCAPE_ROLE = re.compile(r"[%;,\s]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _percent(match: re.Match[str]) -> str:
    return quote(match.group(), safe="")


def encode_value(value: str) -> str:
    """The in-process baggage value for one identity claim."""
    return _ESCAPE.sub(_percent, value) if _ESCAPE.search(value) else value


def decode_value(value: str) -> str:
    """Inverse of ``encode_value``; also drops W3C properties (``;...``) and padding."""
    if ";" in value:
        value = value.split(";", 1)[0]
    value = value.strip(" \t")
    return unquote(value) if "%" in value else value


def encode_roles(roles: Iterable[str]) -> str:
    return ",".join(_ESCAPE_ROLE.sub(_percent, role) for role in roles)


def decode_roles(value: str) -> tuple[str, ...]:
    if ";" in value:
        value = value.split(";", 1)[0]
    return tuple(
        unquote(part) if "%" in part else part
        for part in (item.strip(" \t") for item in value.split(","))
        if part
    )


def check_claim(name: str, value: object) -> str | None:
    """Validate one claim given by the application; None and '' mean 'not set'."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if len(value) > MAX_VALUE_CHARS:
        raise ValueError(f"{name} is longer than {MAX_VALUE_CHARS} characters")
    if _CONTROL.search(value):
        raise ValueError(f"{name} contains control characters")
    return value


def is_acceptable(value: str) -> bool:
    """Whether a decoded inbound claim may be used (bounded, no control characters)."""
    if len(value) > MAX_VALUE_CHARS:
        return False
    # Printable ASCII (every ordinary id) is decided in C, without the regex.
    return (value.isascii() and value.isprintable()) or not _CONTROL.search(value)


@functools.lru_cache(maxsize=4096)
def _members(identity: Identity, keys: tuple[str, str, str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(_members_uncached(identity, keys).items())


def members(identity: Identity, keys: tuple[str, str, str, str]) -> dict[str, str]:
    """The baggage members of an identity, identity keys in a fixed order (a new dict)."""
    return dict(_members(identity, keys))


def _members_uncached(identity: Identity, keys: tuple[str, str, str, str]) -> dict[str, str]:
    user_key, tenant_key, session_key, roles_key = keys
    out: dict[str, str] = {}
    if identity.user_id is not None:
        out[user_key] = encode_value(identity.user_id)
    if identity.tenant_id is not None:
        out[tenant_key] = encode_value(identity.tenant_id)
    if identity.session_id is not None:
        out[session_key] = encode_value(identity.session_id)
    if identity.roles:
        out[roles_key] = encode_roles(identity.roles)
    return out


def encoded_size(key: str, value: object) -> int:
    """Bytes one member takes in OpenTelemetry's W3C header (``quote_plus`` output is ASCII)."""
    return len(quote_plus(str(key))) + 1 + len(quote_plus(str(value)))


def fit(baggage: Mapping[str, object], identity_keys: Iterable[str]) -> dict[str, object] | None:
    """Trim baggage to the W3C minimums, identity members first and never dropped.

    Returns None when the baggage already fits (the common case costs a length check and a
    sum); otherwise a new mapping, identity members first, then as many other members, in
    order, as still fit.
    """
    count = len(baggage)
    if count <= MAX_MEMBERS:
        # Cheap upper bound: a character encodes to at most 12 bytes ("%F0%9F%98%80").
        raw = 0
        for key, value in baggage.items():
            raw += len(key) + len(value) if isinstance(value, str) else MAX_BYTES
        if raw * 12 + count <= MAX_BYTES:
            return None
    keys = [key for key in identity_keys if key in baggage]
    kept: dict[str, object] = {}
    total = 0
    for key in keys:
        kept[key] = baggage[key]
        total += encoded_size(key, baggage[key]) + 1
    for key, value in baggage.items():
        if key in kept:
            continue
        size = encoded_size(key, value)
        if len(kept) >= MAX_MEMBERS or size > MAX_MEMBER_BYTES or total + size > MAX_BYTES:
            continue
        kept[key] = value
        total += size + 1
    if len(kept) == count and list(kept) == list(baggage):
        return None
    return kept


def raw_values(
    baggage: Mapping[str, object], keys: tuple[str, str, str, str]
) -> tuple[object, object, object, object]:
    """The four identity members of a baggage mapping, as stored (None where absent)."""
    return tuple(map(baggage.get, keys))  # type: ignore[return-value]  # (four keys, four values)


def decode_identity(raw: tuple[object, ...]) -> Identity | None:
    """Identity from the four raw baggage values; None if none is set."""
    user, tenant, session, roles = (v if isinstance(v, str) else None for v in raw)
    identity = Identity(
        (decode_value(user) or None) if user else None,
        (decode_value(tenant) or None) if tenant else None,
        (decode_value(session) or None) if session else None,
        decode_roles(roles) if roles else (),
    )
    return None if identity.is_empty else identity
