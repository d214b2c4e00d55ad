"""Setup for doc blocks that talk to RabbitMQ: the broker on loopback, as ``AMQP_URL``.

Skips off CI when the broker is not answering, fails under CI=true (tests/services.py).
"""

from __future__ import annotations

from tests.services import need_service

need_service("rabbitmq", 5672)
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
