"""The libraries this instrumentation applies to (the ``dask`` extra of otel-identity)."""

from __future__ import annotations

_instruments = ("distributed >= 2025.1",)
