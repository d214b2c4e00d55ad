"""The libraries this instrumentation applies to (the ``nats`` extra of otel-identity)."""

from __future__ import annotations

_instruments = ("nats-py >= 2.2, < 3",)
