"""The interface for transport authors: what an instrumentation package needs from the core.

    from otel_identity.instrumentation import adopt_environment

    adopt_environment(caller_environment)   # a worker takes its caller's OTEL_IDENTITY_* settings

Instrumentation packages (ours and third parties') import only ``otel_identity`` and this
module, never ``otel_identity._*``; everything here is documented and kept stable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from otel_identity import _baggage_propagator, _config, _resolver

__all__ = [
    "ENVIRONMENT_PREFIX",
    "adopt_environment",
    "baggage_step_displaced",
    "identity_environment",
    "is_baggage_step",
]

ENVIRONMENT_PREFIX = "OTEL_IDENTITY_"


def identity_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``OTEL_IDENTITY_*`` variables of ``environ`` (the process environment by default):
    what a caller hands to workers that were not started with its environment."""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if k.startswith(ENVIRONMENT_PREFIX)}


def adopt_environment(environment: Mapping[str, str]) -> None:
    """Make the ``OTEL_IDENTITY_*`` variables of ``environment`` this process's settings.

    For a worker process started before (or apart from) its caller: the caller's variables
    replace this process's own, and settings and resolver are read from them again at next
    use, exactly as ``opentelemetry-instrument`` would have read them at start (code changes
    made here before are forgotten). They are validated first: raises ``ConfigurationError``
    naming the variable, and then nothing has changed.
    """
    adopted = identity_environment(environment)
    _config.validate_environment(adopted)
    for name in [n for n in os.environ if n.startswith(ENVIRONMENT_PREFIX)]:
        if name not in adopted:
            del os.environ[name]
    os.environ.update(adopted)
    _config.reset_settings()
    _resolver.reset_resolver()


def baggage_step_displaced() -> bool:
    """Whether identity must not leave through the global textmap's baggage header: true once
    the textmap ``IdentityInstrumentor`` set was replaced by one whose baggage step is not
    otel-identity's (identity then fails closed; the transport filters strip it everywhere)."""
    return _baggage_propagator.displaced()


def is_baggage_step(step: object) -> bool:
    """Whether ``step`` (one propagator of the global textmap) is the W3C baggage step whose
    header otel-identity's codec reads and writes (``IdentityBaggagePropagator``, or
    OpenTelemetry's ``W3CBaggagePropagator`` where someone configured it)."""
    return _baggage_propagator.is_baggage_step(step)
