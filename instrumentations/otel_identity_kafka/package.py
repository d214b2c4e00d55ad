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
