"""otel-identity: user and tenant identity that survives every hop, in OpenTelemetry baggage.

    import otel_identity as oi

    @oi.user_resolver
    def load_user(identity: oi.Identity) -> User | None:
        return db.get(User, identity.user_id)

    with oi.use_identity(user_id="u-42", tenant_id="acme"):
        oi.get_identity()        # Identity(user_id='u-42', tenant_id='acme', ...)
        oi.current_user.email    # resolved once, in this hop's own thread

    # the two sides of any hop
    oi.inject(headers, destination=url)
    with oi.continue_from(headers, hop="queue.consume"):
        ...

The public surface is this module; everything else is private (``otel_identity._*``).
"""

from __future__ import annotations

from otel_identity import names
from otel_identity._baggage_propagator import IdentityBaggagePropagator
from otel_identity._config import Settings, configure, get_settings
from otel_identity._context import (
    clear_identity,
    get_identity,
    require_identity,
    set_identity,
    use_identity,
)
from otel_identity._errors import (
    ConfigurationError,
    IdentityRejectedError,
    MissingIdentityError,
    OtelIdentityError,
)
from otel_identity._handoff import continue_context, hop_state, receive
from otel_identity._headers import HeadersGetter, HeadersSetter, headers_getter, headers_setter
from otel_identity._identity import Identity
from otel_identity._instrumentor import IdentityInstrumentor
from otel_identity._logging import IdentityLogFilter, structlog_processor
from otel_identity._processor import IdentitySpanProcessor
from otel_identity._queues import AsyncIdentityQueue, Envelope, IdentityQueue, seal
from otel_identity._receiving import continue_from, extract
from otel_identity._resolver import (
    aget_current_user,
    clear_cache,
    current_user,
    get_current_user,
    set_user_resolver,
    user_resolver,
)
from otel_identity._sending import inject
from otel_identity.version import __version__

__all__ = [
    "AsyncIdentityQueue",
    "ConfigurationError",
    "Envelope",
    "HeadersGetter",
    "HeadersSetter",
    "Identity",
    "IdentityBaggagePropagator",
    "IdentityInstrumentor",
    "IdentityLogFilter",
    "IdentityQueue",
    "IdentityRejectedError",
    "IdentitySpanProcessor",
    "MissingIdentityError",
    "OtelIdentityError",
    "Settings",
    "__version__",
    "aget_current_user",
    "clear_cache",
    "clear_identity",
    "configure",
    "continue_context",
    "continue_from",
    "current_user",
    "extract",
    "get_current_user",
    "get_identity",
    "get_settings",
    "headers_getter",
    "headers_setter",
    "hop_state",
    "inject",
    "names",
    "receive",
    "require_identity",
    "seal",
    "set_identity",
    "set_user_resolver",
    "structlog_processor",
    "use_identity",
    "user_resolver",
]
