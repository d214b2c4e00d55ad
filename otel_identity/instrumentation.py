"""The interface for transport authors: what an instrumentation package needs from the core.

    import otel_identity as oi
    from otel_identity import instrumentation as oii

    def handle(message):                       # a consumer of some transport
        ctx = oi.extract(message.headers, hop="queue.consume")
        token = oii.attach(ctx)                 # detach in the same thread or task
        try:
            process(message)
        finally:
            oii.detach(token)

Instrumentation packages (ours and third parties') import only ``otel_identity`` and this
module, never ``otel_identity._*``; everything here is documented and kept stable. It is
grouped by side of the hop:

- runtime: ``current_context``, ``attach``/``detach``, ``attached``, ``is_suppressed``;
- receiving: ``HopState``, ``hop_context``, ``with_identity_of``, ``is_anonymous_route``,
  ``missing_event``, ``count_hop``/``hop_key``, ``delivery_context``, ``hold``/``release``;
- receiving inside OpenTelemetry's own pass: ``announce`` a server hop before OpenTelemetry's
  server instrumentation extracts the request, and its extract decides the hop (policy,
  counting, ``current_user`` slot) in the context it attaches; ``announced`` finds the
  ``Arriving`` marker, whose ``decided`` says whether that happened (``decided_context(hop)``
  asks both at once, for the current context); ``withdraw`` ends an
  announcement where the context outlives the request (sketch below); an ``Announcer``
  holds what every request of one hop and route shares, made once (per gRPC method, say),
  and announces each request with one call, ``announcer(request)``;
- in-process hand-off: ``Handoff``, ``enter_handoff``/``leave_handoff``;
- sending: ``outgoing_context``, ``strip_for_egress``, ``judge_destination``,
  ``is_allowed_destination``, ``UNREADABLE_DESTINATION``, ``record_stripped``, the carriers'
  setters, and the global propagator's ``propagator_extract``/``propagator_inject``/
  ``propagator_steps``;
- identity: ``identity_keys``, ``identity_state``, ``is_established``, ``baggage_context``;
- plumbing: ``logger``, ``log_internal_error``, ``log_once``, ``add_event``/``has_event``,
  ``hop_counts``, ``remember``, ``import_object``, ``current_settings``,
  ``environment_settings``, ``adopt_environment``/``identity_environment``, and the baggage
  step checks ``baggage_step_displaced``/``is_baggage_step``.

A server hook whose transport runs OpenTelemetry's own server instrumentation lets that pass
decide the hop (``otel_identity_grpc`` and ``otel_identity_http`` do), and still does the
whole hop itself wherever it did not happen::

    marker = oii.announce("grpc.server", route)    # None where our baggage step is not in use
    ...                                            # OpenTelemetry extracts and attaches
    if marker is not None and marker.decided(oii.current_context()):
        return handler()                           # decided, counted and attached already
    account = marker is None or not marker.counted # an unattached extract may have counted it
    if marker is not None:
        marker.close()
    ctx = oi.extract(carrier, getter, hop="grpc.server", route=route, account=account)
    with oii.attached(ctx):
        return handler()
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from otel_identity import _baggage_propagator, _config, _resolver
from otel_identity._arriving import (
    Announcer,
    Arriving,
    announce,
    announced,
    decided_context,
    withdraw,
)
from otel_identity._config import environment_settings, import_object
from otel_identity._context import is_established
from otel_identity._counts import count as count_hop
from otel_identity._delivery import delivery_context, hold, release
from otel_identity._egress import UNREADABLE as UNREADABLE_DESTINATION
from otel_identity._egress import is_allowed as is_allowed_destination
from otel_identity._egress import judge as judge_destination
from otel_identity._handoff import Handoff
from otel_identity._handoff import enter as enter_handoff
from otel_identity._handoff import leave as leave_handoff
from otel_identity._headers import bytes_headers_setter, header_text, text_headers_setter
from otel_identity._hop_state import HopState, missing_event
from otel_identity._memo import remember
from otel_identity._policy import is_anonymous_route
from otel_identity._propagation import extract as propagator_extract
from otel_identity._propagation import inject as propagator_inject
from otel_identity._propagation import steps as propagator_steps
from otel_identity._receiving import hop_context, with_identity_of
from otel_identity._runtime import attach, attached, current_context, detach, is_suppressed
from otel_identity._sending import baggage_context, outgoing_context, strip_for_egress
from otel_identity._state import IdentityState
from otel_identity._state import all_identity_keys as identity_keys
from otel_identity._state import state_of as identity_state
from otel_identity._telemetry import (
    add_event,
    has_event,
    hop_counts,
    hop_key,
    log_internal_error,
    log_once,
    logger,
    record_stripped,
)

__all__ = [
    "ENVIRONMENT_PREFIX",
    "UNREADABLE_DESTINATION",
    "Announcer",
    "Arriving",
    "Handoff",
    "HopState",
    "IdentityState",
    "add_event",
    "adopt_environment",
    "announce",
    "announced",
    "attach",
    "attached",
    "baggage_context",
    "baggage_step_displaced",
    "bytes_headers_setter",
    "count_hop",
    "current_context",
    "current_settings",
    "decided_context",
    "delivery_context",
    "detach",
    "enter_handoff",
    "environment_settings",
    "has_event",
    "header_text",
    "hold",
    "hop_context",
    "hop_counts",
    "hop_key",
    "identity_environment",
    "identity_keys",
    "identity_state",
    "import_object",
    "is_allowed_destination",
    "is_anonymous_route",
    "is_baggage_step",
    "is_established",
    "is_suppressed",
    "judge_destination",
    "leave_handoff",
    "log_internal_error",
    "log_once",
    "logger",
    "missing_event",
    "outgoing_context",
    "propagator_extract",
    "propagator_inject",
    "propagator_steps",
    "record_stripped",
    "release",
    "remember",
    "strip_for_egress",
    "text_headers_setter",
    "with_identity_of",
    "withdraw",
]

ENVIRONMENT_PREFIX = "OTEL_IDENTITY_"


def current_settings() -> _config.Settings:
    """The settings in force (what ``otel_identity.get_settings`` returns), read without a
    lock once they are installed: for per-call checks on a transport's hot path."""
    return _config.current or _config.get_settings()


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
