"""Exceptions raised by otel-identity.

The hierarchy, in one place::

    OtelIdentityError
    ├── MissingIdentityError      require_identity() found no identity
    ├── IdentityRejectedError     inbound identity failed policy where the caller asked to raise
    └── ConfigurationError        configure() or the environment gave an invalid setting

The library raises only where the caller asked it to: on the request path every failure of
its own or of its input is recorded as a span event and logged, never raised.
"""

from __future__ import annotations


class OtelIdentityError(Exception):
    """Base class of every exception raised by otel-identity."""


class MissingIdentityError(OtelIdentityError, LookupError):
    """The context has no identity, and the caller required one."""


class IdentityRejectedError(OtelIdentityError):
    """Inbound identity failed the hop's policy (see ``identity.reject_reason``)."""

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or f"inbound identity rejected: {reason}")
        self.reason = reason


class ConfigurationError(OtelIdentityError, ValueError):
    """A setting given to ``configure()`` or through ``OTEL_IDENTITY_*`` is invalid."""
