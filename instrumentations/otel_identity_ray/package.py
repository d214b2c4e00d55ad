"""The libraries this instrumentation applies to (the ``ray`` extra of otel-identity)."""

from __future__ import annotations

_instruments = ("ray >= 2.40, < 3",)
