"""Every private OpenTelemetry internal the core uses, each with its public-API fallback.

    from otel_identity._internals import BAGGAGE_KEY, current_context

    baggage = current_context().get(BAGGAGE_KEY)      # the baggage mapping, no copy

Reading the context's entries in place (instead of through ``get_all``/``get_current_span``,
which copy or wrap) and setting OpenTelemetry's ContextVar directly are what make a hop a few
dict operations. Each one is here and nowhere else, with a fallback to the public API when an
upgrade moves it; ``tests/core/test_internals.py`` fails loudly when one is no longer found,
so the fallback is a safety net, never a silent slowdown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry import baggage as otel_baggage
from opentelemetry import context as otel_context
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.instrumentation import utils as instrumentation_utils
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.trace import INVALID_SPAN
from opentelemetry.trace import propagation as trace_propagation
from opentelemetry.util.types import AttributeValue


def _probed_keys(make: Callable[[], Context]) -> tuple[str, ...]:
    """The keys a public API call adds to an empty context: the fallback for a private key."""
    return tuple(make())


def _suppressed_context() -> Context:
    with suppress_instrumentation():
        return otel_context.get_current()


# The keys under which OpenTelemetry keeps baggage and the current span in a Context.
BAGGAGE_KEY: str = (
    getattr(otel_baggage, "_BAGGAGE_KEY", None)
    or _probed_keys(lambda: otel_baggage.set_baggage("k", "v", Context()))[0]
)
SPAN_KEY: str = (
    getattr(trace_propagation, "_SPAN_KEY", None)
    or _probed_keys(lambda: trace_propagation.set_span_in_context(INVALID_SPAN, Context()))[0]
)
# The keys that suppress instrumentation: the API's, and the one instrumentations also set.
SUPPRESS_KEY: str | None = getattr(otel_context, "_SUPPRESS_INSTRUMENTATION_KEY", None)
SUPPRESS_KEY_PLAIN: str | None = getattr(
    instrumentation_utils, "_SUPPRESS_INSTRUMENTATION_KEY_PLAIN", None
)
if SUPPRESS_KEY is None or SUPPRESS_KEY_PLAIN is None:
    _suppressing = _probed_keys(_suppressed_context)
    SUPPRESS_KEY, SUPPRESS_KEY_PLAIN = _suppressing[0], _suppressing[-1]

# The SDK's span classes (its tracer makes a subclass): spans known to have valid ids.
SDK_SPANS = (SdkSpan, *SdkSpan.__subclasses__())

# Attaching a Context is setting OpenTelemetry's ContextVar. Through the API that is two more
# calls each way, a noticeable share of a thread hop; so with the default runtime context (the
# only one OpenTelemetry Python ships) hops set the variable itself, with the same semantics,
# as long as the detach happens in the same thread or task as the attach (``detach`` raises
# where OpenTelemetry's ``detach`` would log). Any other runtime context goes through the API.
_runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
_variable = getattr(_runtime, "_current_context", None)
FAST_RUNTIME = type(_runtime) is ContextVarsRuntimeContext and _variable is not None
current_context: Callable[[], Context] = otel_context.get_current
attach: Callable[[Context], Any] = otel_context.attach
detach: Callable[[Any], None] = otel_context.detach
if FAST_RUNTIME:
    current_context = _variable.get  # type: ignore[union-attr]
    attach = _variable.set  # type: ignore[union-attr]
    detach = _variable.reset  # type: ignore[union-attr]


def is_suppressed(ctx: Context) -> bool:
    """Whether ``ctx`` suppresses instrumentation: ``is_instrumentation_enabled`` for a
    context already at hand, without looking the current one up again."""
    return bool(ctx.get(SUPPRESS_KEY) or ctx.get(SUPPRESS_KEY_PLAIN))  # type: ignore[arg-type]


def is_span_of_kind(span: Any, kind: object) -> bool:
    """Whether ``span`` is of ``kind`` and has valid ids. The SDK gives every span of its own
    valid ids and keeps its kind behind a property, read in place; any other span is asked."""
    if type(span) in SDK_SPANS:
        return (getattr(span, "_kind", None) or span.kind) is kind
    return getattr(span, "kind", None) is kind and bool(span.get_span_context().is_valid)


def set_span_attributes(span: Any, attributes: dict[str, AttributeValue]) -> None:
    """``span.set_attributes(attributes)`` for attributes already validated (strings, a bool,
    a tuple of strings), shared and never mutated.

    The SDK cleans every value it is given (about 2 us for our three to five, on every span).
    So where the span is the SDK's own, still starting (the SDK makes its attributes immutable
    when it ends), with room for them all and no value-length limit, they go straight into its
    attribute store; in any other case through ``set_attributes``. tests/core/test_processor.py
    checks that both give the same span."""
    bounded = getattr(span, "_attributes", None)
    if type(bounded) is BoundedAttributes and bounded._immutable is False:
        store, maxlen = getattr(bounded, "_dict", None), bounded.maxlen
        if (
            type(store) is dict
            and bounded.max_value_len is None
            and (maxlen is None or len(store) + len(attributes) <= maxlen)
        ):
            store.update(attributes)
            return
    span.set_attributes(attributes)


def composite_steps(propagator: object) -> tuple[Any, ...] | None:
    """The propagators a ``CompositePropagator`` runs in order (it keeps them privately), or
    None when they cannot be read."""
    steps = getattr(propagator, "_propagators", None)
    return None if steps is None else tuple(steps)
