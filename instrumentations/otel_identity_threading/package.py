"""What this instrumentation instruments: the standard library only (the ``threading`` extra)."""

from __future__ import annotations

_instruments: tuple[str, ...] = ()

# OpenTelemetry's span instrumentation for each library this boundary serves (any one listed
# will do; the otel-identity extra ``_extra`` brings them): without it no span of this
# boundary is exported under opentelemetry-instrument, so no identity attribute and no
# identity.missing either.
# ``otel-identity doctor`` warns when a library is installed and none of its span
# instrumentations is.
# Threads make no spans of their own: nothing to add.
_spans: dict[str, tuple[str, ...]] = {}
_extra = "threading"
