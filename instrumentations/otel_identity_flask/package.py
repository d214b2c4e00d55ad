"""What this instrumentation instruments (the same list as the ``flask`` extra)."""

from __future__ import annotations

_instruments: tuple[str, ...] = ("flask >= 2.3", "flask-login >= 0.6.3")
