"""What this instrumentation instruments (the same list as the ``flask`` extra)."""

from __future__ import annotations

_instruments: tuple[str, ...] = ("flask >= 2.3", "flask-login >= 0.6.3")

# OpenTelemetry's span instrumentation for each library this boundary serves (any one listed
# will do; the otel-identity extra ``_extra`` brings them): without it no span of this
# boundary is exported under opentelemetry-instrument, so no identity attribute and no
# identity.missing either.
# ``otel-identity doctor`` warns when a library is installed and none of its span
# instrumentations is.
_spans: dict[str, tuple[str, ...]] = {"flask": ("opentelemetry-instrumentation-flask",)}
_extra = "flask"
