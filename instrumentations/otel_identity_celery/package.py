"""The libraries this instrumentation applies to (the ``celery`` extra of otel-identity)."""

from __future__ import annotations

_instruments = ("celery >= 5.3, < 6",)
