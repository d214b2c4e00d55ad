"""The users of the zero-code services: who logs in at the edge, and the resolver every hop
runs (``OTEL_IDENTITY_RESOLVER=zc_users:resolve``), which notes the thread it ran in."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from flask_login import UserMixin

TOKENS = {"ada-token": "u-1", "grace-token": "u-2"}
PEOPLE = {"u-1": ("Ada", "acme"), "u-2": ("Grace", "globex")}


@dataclass
class User(UserMixin):  # type: ignore[misc]
    id: str
    name: str
    tenant: str
    loaded_in: str  # the thread that built this object

    def describe(self) -> dict[str, str]:
        return {"user": self.id, "tenant": self.tenant, "loaded_in": self.loaded_in}


def load(user_id: str) -> User | None:
    person = PEOPLE.get(user_id)
    if person is None:
        return None
    return User(user_id, person[0], person[1], threading.current_thread().name)


def resolve(identity: object) -> User | None:
    """The otel-identity resolver: a fresh user object, built in the hop's own thread."""
    return load(getattr(identity, "user_id", None) or "")
