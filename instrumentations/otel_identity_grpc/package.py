"""The library versions this instrumentation supports (same list as the ``grpc`` extra)."""

from __future__ import annotations

_instruments = ("grpcio >= 1.42.0, < 2",)

# OpenTelemetry's span instrumentation for each library this boundary serves (any one listed
# will do; the otel-identity extra ``_extra`` brings them): without it no span of this
# boundary is exported under opentelemetry-instrument, so no identity attribute and no
# identity.missing either.
# ``otel-identity doctor`` warns when a library is installed and none of its span
# instrumentations is.
_spans: dict[str, tuple[str, ...]] = {"grpcio": ("opentelemetry-instrumentation-grpc",)}
_extra = "grpc"
