"""Every private OpenTelemetry internal the core relies on is still where ``_internals`` reads it.

These fail loudly on an upgrade that moves one: the fallback to the public API keeps the
library correct, but silently slower, so a move must be noticed and ``_internals`` updated.
"""

from __future__ import annotations

import threading

from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.propagate import get_global_textmap
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import INVALID_SPAN, SpanKind

from otel_identity import _internals


def test_the_baggage_and_span_keys_are_opentelemetrys_own() -> None:
    ctx = baggage.set_baggage("k", "v", Context())
    assert list(ctx) == [_internals.BAGGAGE_KEY]
    assert ctx[_internals.BAGGAGE_KEY] == {"k": "v"}
    ctx = trace.set_span_in_context(INVALID_SPAN, Context())
    assert list(ctx) == [_internals.SPAN_KEY]
    # Read from OpenTelemetry itself, not found by the public-API fallback.
    assert _internals.BAGGAGE_KEY is baggage._BAGGAGE_KEY  # type: ignore[attr-defined]


def test_the_suppression_keys_are_the_ones_suppress_instrumentation_sets() -> None:
    with suppress_instrumentation():
        current = otel_context.get_current()
        assert _internals.is_suppressed(current)
        assert {_internals.SUPPRESS_KEY, _internals.SUPPRESS_KEY_PLAIN} <= set(current)
    assert not _internals.is_suppressed(otel_context.get_current())


def test_the_runtime_context_is_set_directly() -> None:
    """OpenTelemetry's default runtime context keeps the current context in a ContextVar."""
    runtime = otel_context._RUNTIME_CONTEXT  # type: ignore[attr-defined]
    assert type(runtime) is ContextVarsRuntimeContext
    assert _internals.FAST_RUNTIME
    ctx = baggage.set_baggage("k", "attached")
    token = _internals.attach(ctx)
    try:
        assert otel_context.get_current() is ctx  # the API sees what was set directly
        assert _internals.current_context() is ctx
    finally:
        _internals.detach(token)
    assert otel_context.get_current() is not ctx


def test_a_detach_in_another_thread_raises_instead_of_logging() -> None:
    """The one difference from OpenTelemetry's detach, which callers must respect."""
    token = _internals.attach(Context())
    errors: list[BaseException] = []

    def elsewhere() -> None:
        try:
            _internals.detach(token)
        except ValueError as exc:
            errors.append(exc)

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    _internals.detach(token)
    assert len(errors) == 1


def test_the_sdk_span_kind_and_attribute_store_are_read_in_place() -> None:
    span = TracerProvider().get_tracer("t").start_span("s", kind=SpanKind.CONSUMER)
    assert type(span) in _internals.SDK_SPANS
    assert span._kind is SpanKind.CONSUMER  # type: ignore[attr-defined]
    assert _internals.is_span_of_kind(span, SpanKind.CONSUMER)
    assert not _internals.is_span_of_kind(span, SpanKind.SERVER)
    store = span._attributes._dict  # type: ignore[attr-defined]
    _internals.set_span_attributes(span, {"tenant.id": "acme"})
    assert store["tenant.id"] == "acme"  # straight into the SDK's store
    span.end()
    assert span.attributes["tenant.id"] == "acme"  # type: ignore[index]


def test_any_other_span_is_asked_through_the_api() -> None:
    assert not _internals.is_span_of_kind(INVALID_SPAN, None)  # no kind, no valid ids
    other = trace.NonRecordingSpan(trace.SpanContext(1, 2, is_remote=False))
    assert not _internals.is_span_of_kind(other, SpanKind.SERVER)


def test_a_composite_propagator_lists_its_steps_privately() -> None:
    textmap = get_global_textmap()
    composite = CompositePropagator([textmap])
    assert _internals.composite_steps(composite) == (textmap,)
    assert _internals.composite_steps(object()) is None
