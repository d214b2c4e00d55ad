from __future__ import annotations

from otel_identity.version import __version__

__all__ = ["__version__"]
