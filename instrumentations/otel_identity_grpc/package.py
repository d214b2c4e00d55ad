"""The library versions this instrumentation supports (same list as the ``grpc`` extra)."""

from __future__ import annotations

_instruments = ("grpcio >= 1.42.0, < 2",)
