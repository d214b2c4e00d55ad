"""The libraries this instrumentation applies to (the ``ray`` extra of otel-identity)."""

from __future__ import annotations

_instruments = ("ray >= 2.40, < 3",)

# OpenTelemetry's span instrumentation for each library this boundary serves (see
# otel_identity_nats/package.py for what doctor does with it).
# OpenTelemetry contrib has none for Ray: Ray's own tracing hook makes its task spans.
_spans: dict[str, tuple[str, ...]] = {"ray": ()}
_extra = "ray"
