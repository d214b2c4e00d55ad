"""A resolver importable by name, for OTEL_IDENTITY_RESOLVER tests."""

from __future__ import annotations

import otel_identity as oi


def by_id(identity: oi.Identity) -> dict[str, str | None]:
    return {"id": identity.user_id}
