"""The ``otel-identity demo`` application (not an instrumentation).

It is an application of the instrumentation packages and their third-party libraries (grpcio,
requests), so it lives in a top-level package of its own and the core never imports it: the
CLI finds ``run`` through the ``otel_identity.commands`` entry point ``demo``, and says which
extra to install if it is missing::

    pip install 'otel-identity[demo]' && otel-identity demo
"""

from __future__ import annotations

# Name the extra, rather than a bare "No module named 'grpc'" (celery is imported only for
# --broker, where it is part of the same extra).
try:
    import grpc
    import requests
except ModuleNotFoundError as exc:
    raise ModuleNotFoundError(
        f"the demo needs grpcio and requests ({exc.name!r} is not installed): "
        "pip install 'otel-identity[demo]'",
        name=exc.name,
    ) from exc

from otel_identity_demo._flow import render_tree, run

del grpc, requests  # imported above only to name the extra when one is missing

__all__ = ["render_tree", "run"]
