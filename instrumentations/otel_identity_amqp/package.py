"""The libraries this instrumentation applies to (the ``amqp`` extra of otel-identity).

Either one is enough: ``instrumentation_dependencies`` reports the installed ones.
"""

from __future__ import annotations

_instruments_pika = "pika >= 1.2, < 2"
_instruments_aio_pika = "aio-pika >= 9, < 11"
_instruments = (_instruments_pika, _instruments_aio_pika)
