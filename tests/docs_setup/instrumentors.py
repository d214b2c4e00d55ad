"""Setup for doc blocks that call ``instrument()``: ``teardown`` undoes every instrumentor.

Instrumentors are process-wide singletons; a doc block shows ``instrument()`` the way an
application calls it once at start-up, and this puts the test process back as it was.
"""

from __future__ import annotations

from importlib import metadata


def teardown() -> None:
    for entry_point in metadata.entry_points(group="opentelemetry_instrumentor"):
        if entry_point.value.startswith("otel_identity"):
            instrumentor = entry_point.load()()
            if instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.uninstrument()
