"""``IdentitySpanProcessor``: identity on every span, and a loud event where it went missing.

    from opentelemetry.sdk.trace import TracerProvider
    provider = TracerProvider()
    provider.add_span_processor(oi.IdentitySpanProcessor())

All work happens in ``on_start``: no I/O, nothing raised. A span whose parent context has an
identity gets ``user.id`` (or ``user.hash``), ``tenant.id``, ``session.id``, ``user.roles`` and
``identity.verified``. A SERVER or CONSUMER span that starts without identity on a required
hop, outside the anonymous routes, gets ``identity.missing``, unless an otel-identity hop
already accounted for it. Events a hop could not put on a span yet go on the first span
started under it.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind

from otel_identity import _config, _telemetry, names
from otel_identity._config import AttributeMode
from otel_identity._handoff import hop_of
from otel_identity._hop_state import HopState, missing_event
from otel_identity._internals import set_span_attributes
from otel_identity._policy import is_anonymous_route
from otel_identity._runtime import current_context
from otel_identity._state import state_of

_HOP_KINDS = (SpanKind.SERVER, SpanKind.CONSUMER)  # the spans of receiving hops
_ROUTE_ATTRIBUTES = ("http.route", "url.path", "http.target", "messaging.destination.name")


def _hop_of(span: Span) -> str:
    attributes = span.attributes or {}
    if span.kind is SpanKind.CONSUMER:
        return names.HOP_QUEUE_CONSUME
    if attributes.get("rpc.system") == "grpc":
        return names.HOP_GRPC_SERVER
    return names.HOP_HTTP_SERVER


def _route_of(span: Span) -> str | None:
    attributes = span.attributes or {}
    for key in _ROUTE_ATTRIBUTES:
        value = attributes.get(key)
        if isinstance(value, str):
            return value.split("?", 1)[0]
    if attributes.get("rpc.system") == "grpc":
        return f"/{attributes.get('rpc.service', '')}/{attributes.get('rpc.method', '')}"
    if span.kind is SpanKind.CONSUMER and span.name.startswith("run/"):
        return span.name[4:]  # OpenTelemetry's Celery instrumentation names spans run/<task>
    return span.name


class IdentitySpanProcessor(SpanProcessor):
    """Stamps identity attributes and records ``identity.missing`` at span start.

    ``span_attributes`` overrides the ``span_attributes`` setting (``id``, ``hash``, ``none``)
    for this processor.
    """

    def __init__(self, *, span_attributes: AttributeMode | None = None) -> None:
        if span_attributes not in (None, "id", "hash", "none"):
            raise ValueError("span_attributes must be 'id', 'hash', 'none' or None")
        self._mode = span_attributes
        self.enabled = True

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if not self.enabled:
            return
        try:
            ctx = parent_context if parent_context is not None else current_context()
            hop: Any = hop_of(ctx)
            if hop is not None and hop.pending:
                hop.flush(span)
            state = state_of(ctx)
            if state is None:
                if span.kind in _HOP_KINDS and not isinstance(hop, HopState):
                    self._check_missing(span, _config.get_settings())
                return
            mode = self._mode or (_config.current or _config.get_settings()).span_attributes
            attributes = state.span_attributes(mode)
            if attributes:
                set_span_attributes(span, attributes)
        except Exception:  # noqa: BLE001 - a processor must never raise into span creation
            _telemetry.log_internal_error("IdentitySpanProcessor.on_start")

    @staticmethod
    def _check_missing(span: Span, settings: _config.Settings) -> None:
        # A hop no otel-identity extract has seen (yet). On an edge whose identity comes from
        # its own authentication (inbound=strip), none is expected at span start.
        if settings.effective_inbound == "strip":
            return
        hop = _hop_of(span)
        if hop in settings.required_hops and not is_anonymous_route(_route_of(span), settings):
            name, attributes = missing_event(hop, settings)
            span.add_event(name, attributes)

    def on_end(self, span: ReadableSpan) -> None:
        return None

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
