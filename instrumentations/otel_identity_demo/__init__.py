"""The ``otel-identity demo`` application (not an instrumentation).

It lives beside the instrumentation packages, not in the core, because it uses them and their
third-party libraries (grpcio, requests): the core never imports either. ``otel-identity demo``
loads it by name and says which extra to install if it is missing::

    pip install 'otel-identity[demo]' && otel-identity demo
"""

from __future__ import annotations

from otel_identity_demo._flow import render_tree, run

__all__ = ["render_tree", "run"]
