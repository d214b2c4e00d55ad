from __future__ import annotations

from collections.abc import Iterator

import pytest
from otel_identity_threading import ThreadingIdentityInstrumentor


@pytest.fixture
def instrumented() -> Iterator[ThreadingIdentityInstrumentor]:
    instrumentor = ThreadingIdentityInstrumentor()
    instrumentor.instrument()
    try:
        yield instrumentor
    finally:
        instrumentor.uninstrument()
