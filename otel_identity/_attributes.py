"""The span attributes of an identity: what ``IdentitySpanProcessor`` puts on every span.

    from otel_identity._attributes import span_attributes

    span_attributes(identity, identity.verified, "hash")   # {"user.hash": ..., "tenant.id": ...}

``mode`` is the ``span_attributes`` setting: ``id`` (the user id), ``hash`` (its SHA-256) or
``none``. Results are shared per identity: callers must not mutate them.
"""

from __future__ import annotations

import functools
import hashlib

from opentelemetry.util.types import AttributeValue

from otel_identity import names
from otel_identity._identity import Identity


@functools.lru_cache(maxsize=4096)
def hash_user(user_id: str) -> str:
    return hashlib.sha256(user_id.encode("utf-8")).hexdigest()


@functools.lru_cache(maxsize=4096)
def span_attributes(identity: Identity, verified: bool, mode: str) -> dict[str, AttributeValue]:
    """The span attributes of an identity (shared: callers must not mutate the result).

    ``verified`` is not part of Identity equality, so it is part of the key."""
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
