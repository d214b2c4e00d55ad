"""Module-level callables for child processes: spawn and forkserver import them by name."""

from __future__ import annotations

import os
from typing import Any

import otel_identity as oi
from otel_identity import _telemetry


class User:
    """What a resolver returns: a fresh object per resolution, stamped with where it was made."""

    def __init__(self, user_id: str | None, tenant_id: str | None) -> None:
        self.id = user_id
        self.current_tenant = tenant_id
        self.pid = os.getpid()


def load_user(identity: oi.Identity) -> User:
    return User(identity.user_id, identity.tenant_id)


RESOLVER = f"{__name__}:load_user"


def observe(tag: object = None) -> dict[str, Any]:
    """What the receiving side sees: identity, its own user, and the hops it counted."""
    before = _telemetry.hop_counts()
    identity = oi.get_identity()
    user = oi.get_current_user()
    return {
        "tag": tag,
        "pid": os.getpid(),
        "user_id": identity.user_id if identity else None,
        "tenant_id": identity.tenant_id if identity else None,
        "user": None if user is None else (user.id, user.current_tenant, user.pid),
        "same_user_twice": user is oi.get_current_user(),
        "hops": _telemetry.hop_counts(),
        "hops_before": before,
    }


def observe_into(queue: Any, tag: object = None) -> None:
    queue.put(observe(tag))
