"""The libraries this instrumentation applies to.

``_instruments`` is the ``kafka`` extra of otel-identity (confluent-kafka); kafka-python and
its fork kafka-python-ng are supported too, and any one of the three is enough:
``instrumentation_dependencies`` reports the installed ones.
"""

from __future__ import annotations

_instruments = ("confluent-kafka >= 2.3, < 3",)
_instruments_any = (
    "confluent-kafka >= 2.3, < 3",
    "kafka-python >= 2.0, < 3",
    "kafka-python-ng >= 2.2, < 3",
)

# OpenTelemetry's span instrumentation for each library this boundary serves (any one listed
# will do; the otel-identity extra ``_extra`` brings them): without it no span of this
# boundary is exported under opentelemetry-instrument, so no identity attribute and no
# identity.missing either.
# ``otel-identity doctor`` warns when a library is installed and none of its span
# instrumentations is.
_spans: dict[str, tuple[str, ...]] = {
    "confluent-kafka": ("opentelemetry-instrumentation-confluent-kafka",),
    "kafka-python": ("opentelemetry-instrumentation-kafka-python",),
    "kafka-python-ng": ("opentelemetry-instrumentation-kafka-python",),
}
_extra = "kafka"
