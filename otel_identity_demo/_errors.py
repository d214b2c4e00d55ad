"""The demo's one error: why it cannot run."""

from __future__ import annotations


class DemoError(Exception):
    """Why the demo cannot run, in one line for its user (``otel-identity demo`` exits 2)."""
