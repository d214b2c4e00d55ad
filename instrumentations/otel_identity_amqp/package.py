"""The libraries this instrumentation applies to (the ``amqp`` extra of otel-identity).

Either one is enough: ``instrumentation_dependencies`` reports the installed ones.
"""

from __future__ import annotations

_instruments_pika = "pika >= 1.2, < 2"
_instruments_aio_pika = "aio-pika >= 9, < 11"
_instruments = (_instruments_pika, _instruments_aio_pika)

# OpenTelemetry's span instrumentation for each library this boundary serves (any one listed
# will do; the otel-identity extra ``_extra`` brings them): without it no span of this
# boundary is exported under opentelemetry-instrument, so no identity attribute and no
# identity.missing either.
# ``otel-identity doctor`` warns when a library is installed and none of its span
# instrumentations is.
_spans: dict[str, tuple[str, ...]] = {
    "pika": ("opentelemetry-instrumentation-pika",),
    "aio-pika": ("opentelemetry-instrumentation-aio-pika",),
}
_extra = "amqp"
