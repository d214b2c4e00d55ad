"""What this instrumentation instruments: the standard library only (the ``threading`` extra)."""

from __future__ import annotations

_instruments: tuple[str, ...] = ()
