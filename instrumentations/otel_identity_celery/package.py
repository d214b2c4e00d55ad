"""The libraries this instrumentation applies to (the ``celery`` extra of otel-identity)."""

from __future__ import annotations

_instruments = ("celery >= 5.3, < 6",)

# OpenTelemetry's span instrumentation for each library this boundary serves (any one listed
# will do; the otel-identity extra ``_extra`` brings them): without it no span of this
# boundary is exported under opentelemetry-instrument, so no identity attribute and no
# identity.missing either.
# ``otel-identity doctor`` warns when a library is installed and none of its span
# instrumentations is.
_spans: dict[str, tuple[str, ...]] = {"celery": ("opentelemetry-instrumentation-celery",)}
_extra = "celery"
