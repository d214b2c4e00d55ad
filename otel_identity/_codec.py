"""Identity <-> baggage members, and the W3C limits.

Identity members are plain baggage entries whose in-process values are the claims themselves:
``baggage.get_baggage("user.id") == get_identity().user_id``. The wire form is the baggage
codec's (``_baggage``: exact percent-encoding), so no value needs an escape of its own here.
Roles are comma-joined (``admin,ops``), which is exact because a role never holds a comma.

Claims are refused (``set_identity`` raises, an inbound hop is ``malformed``) when they hold a
control character, leading or trailing whitespace, or more than 1024 characters.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping

from otel_identity import _baggage
from otel_identity._identity import Identity

# W3C baggage minimums a platform must propagate; above them members may be dropped, and we
# choose which: never identity members.
MAX_MEMBERS = _baggage.MAX_MEMBERS
MAX_BYTES = _baggage.MAX_BYTES
# OpenTelemetry Python drops a single member above this many bytes, on inject and extract.
MAX_MEMBER_BYTES = 4096
# An identity value longer than this (decoded) is refused: no real id is this long, and a
# bound keeps hostile input cheap to handle.
MAX_VALUE_CHARS = 1024

# C0, DEL and C1, as the baggage codec refuses them on arrival.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
ROLE_SEPARATOR = ","


def encode_roles(roles: Iterable[str]) -> str:
    return ROLE_SEPARATOR.join(roles)


def decode_roles(value: str) -> tuple[str, ...]:
    """The roles of a ``user.roles`` value; an empty element stays (and is then refused)."""
    return tuple(value.split(ROLE_SEPARATOR)) if value else ()


def _claim_problem(value: str, role: bool) -> str | None:
    """Why a claim cannot be an identity value, or None."""
    if len(value) > MAX_VALUE_CHARS:
        return f"is longer than {MAX_VALUE_CHARS} characters"
    # Printable ASCII without edge spaces (every ordinary id) is decided without the regex.
    plain = value.isascii() and value.isprintable()
    if not plain and _CONTROL.search(value):
        return "contains control characters"
    if value != value.strip():
        return "has leading or trailing whitespace"
    if role and ROLE_SEPARATOR in value:
        return "contains a comma (roles travel comma-joined)"
    return None


def check_claim(name: str, value: object) -> str | None:
    """Validate one claim given by the application; None and '' mean 'not set'."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    problem = _claim_problem(value, role=name == "role")
    if problem is not None:
        raise ValueError(f"{name} {problem}")
    return value


def is_acceptable(value: str) -> bool:
    """Whether a decoded inbound claim may be used (the rules ``check_claim`` applies)."""
    return _claim_problem(value, role=False) is None


def acceptable_identity(identity: Identity) -> bool:
    """Whether every claim of a decoded inbound identity may be used (roles: none empty)."""
    claims = (identity.user_id, identity.tenant_id, identity.session_id)
    return all(_claim_problem(v, role=False) is None for v in claims if v is not None) and all(
        role and _claim_problem(role, role=True) is None for role in identity.roles
    )


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
        out[user_key] = identity.user_id
    if identity.tenant_id is not None:
        out[tenant_key] = identity.tenant_id
    if identity.session_id is not None:
        out[session_key] = identity.session_id
    if identity.roles:
        out[roles_key] = encode_roles(identity.roles)
    return out


def encoded_size(key: str, value: object) -> int:
    """Bytes one member takes in the header (the baggage codec's exact encoding)."""
    return _baggage.member_size(key, value)


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
    identity = Identity(user or None, tenant or None, session or None, decode_roles(roles or ""))
    return None if identity.is_empty else identity
