"""Setup for doc blocks that talk to NATS: the server on loopback, as ``NATS_URL``.

Skips off CI when the server is not answering, fails under CI=true (tests/services.py).
A ``SUBJECT`` of its own keeps concurrent runs on the same server apart.
"""

from __future__ import annotations

import uuid

from tests.services import need_service

need_service("nats", 4222)
NATS_URL = "nats://127.0.0.1:4222"
SUBJECT = f"docs.orders.{uuid.uuid4().hex[:8]}"
