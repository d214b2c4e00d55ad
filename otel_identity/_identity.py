"""The immutable value that travels: who is asking, on behalf of which tenant."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a unit of work runs for.

    ``verified`` is bookkeeping of the current hop, not a claim: it is True only when a valid
    signature was checked on this hop, and it never travels on the wire.
    """

    user_id: str | None = None
    tenant_id: str | None = None
    session_id: str | None = None
    roles: tuple[str, ...] = ()
    verified: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        # Accept any iterable of roles but always hold a tuple, so the value stays hashable and
        # nobody can mutate the roles of an identity another hop is reading.
        if not isinstance(self.roles, tuple):
            object.__setattr__(self, "roles", tuple(self.roles))

    @property
    def is_empty(self) -> bool:
        """True when no claim is set (such an identity is never stored)."""
        return (
            self.user_id is None
            and self.tenant_id is None
            and self.session_id is None
            and not self.roles
        )

    def claims(self) -> tuple[str | None, str | None, str | None, tuple[str, ...]]:
        """The travelling part, as a hashable tuple (cache key of resolver and verifier)."""
        return (self.user_id, self.tenant_id, self.session_id, self.roles)
