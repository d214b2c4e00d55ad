"""Shared by the tests of hops decided in OpenTelemetry's own pass: the global textmap as
``IdentityInstrumentor`` leaves it, and the two samplers every such case runs under.

    from tests.baggage_step import SAMPLERS, our_baggage_step  # noqa: F401 - autouse
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import propagate
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

import otel_identity as oi

SAMPLERS = pytest.mark.parametrize("sampler", [ALWAYS_ON, ALWAYS_OFF], ids=["sampled", "dropped"])
OUR_STEP = CompositePropagator([TraceContextTextMapPropagator(), oi.IdentityBaggagePropagator()])


@pytest.fixture(autouse=True)
def our_baggage_step() -> Iterator[None]:
    """The global textmap as IdentityInstrumentor leaves it: our baggage step in it."""
    before = propagate.get_global_textmap()
    propagate.set_global_textmap(OUR_STEP)
    yield
    propagate.set_global_textmap(before)
