"""The core's auto-instrumentation entry point: the span processor and our baggage step.

``opentelemetry-instrument`` loads it through the ``opentelemetry_instrumentor`` entry point
``otel_identity``; by hand::

    from otel_identity import IdentityInstrumentor
    IdentityInstrumentor().instrument()   # after the SDK's TracerProvider is set

The SDK cannot remove a span processor, so ``uninstrument`` switches ours off and a later
``instrument`` switches the same one on again: never two on one provider.

``instrument`` also puts ``IdentityBaggagePropagator`` in place of OpenTelemetry's
``W3CBaggagePropagator`` in the global textmap (DESIGN.md, "Wire format"), so every
instrumentation's extract and inject use our codec; ``uninstrument`` puts the original back.
A textmap with no baggage step is left as it is (and a warning says identity cannot travel).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)

from otel_identity import _baggage_propagator
from otel_identity._processor import IdentitySpanProcessor
from otel_identity._telemetry import logger

_processors: dict[int, IdentitySpanProcessor] = {}


def _providers_of(provider: Any) -> Any:
    # A ProxyTracerProvider forwards to the real one once the SDK has set it.
    return getattr(provider, "_real_tracer_provider", None) or provider


def carries_baggage(propagator: Any = None) -> bool:
    """Whether the global propagator (or ``propagator``) has a W3C baggage step (ours or
    OpenTelemetry's, or one of unknown make that reads the header)."""
    return _baggage_propagator.baggage_step_status(propagator) != "none"


class IdentityInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Installs ``IdentitySpanProcessor`` on the global SDK tracer provider."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        provider = _providers_of(kwargs.get("tracer_provider") or trace.get_tracer_provider())
        add = getattr(provider, "add_span_processor", None)
        if add is None:
            logger.info(
                "otel-identity: no SDK TracerProvider is set; identity span attributes are off"
            )
        else:
            processor = _processors.get(id(provider))
            if processor is None:
                processor = IdentitySpanProcessor()
                _processors[id(provider)] = processor
                add(processor)
            processor.enabled = True
        _baggage_propagator.install()
        if not carries_baggage():
            logger.warning(
                "otel-identity: the global propagator has no W3C baggage propagator "
                "(OTEL_PROPAGATORS); identity will not cross process boundaries"
            )

    def _uninstrument(self, **kwargs: Any) -> None:
        for processor in _processors.values():
            processor.enabled = False
        _baggage_propagator.uninstall()
