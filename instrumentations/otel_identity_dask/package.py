"""The libraries this instrumentation applies to (the ``dask`` extra of otel-identity)."""

from __future__ import annotations

_instruments = ("distributed >= 2025.1",)

# OpenTelemetry's span instrumentation for each library this boundary serves (see
# otel_identity_nats/package.py for what doctor does with it).
# OpenTelemetry has none for Dask: a task's spans come from the task's own code, and the
# identity.missing of a task without identity goes on the first span it starts.
_spans: dict[str, tuple[str, ...]] = {"distributed": ()}
_extra = "dask"
