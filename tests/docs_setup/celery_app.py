"""Setup for the Celery doc block: ``app`` on the loopback Redis, and ``worker()``.

``worker()`` runs a worker in threads of this process, as ``celery -A app worker`` would in
its own; each run gets a queue of its own, so nothing from an earlier run is consumed.
Skips off CI when Redis is not answering, fails under CI=true (tests/services.py).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

from celery import Celery
from celery.contrib.testing.worker import start_worker

from tests.services import need_service

need_service("redis", 6379)
app = Celery("docs", broker="redis://127.0.0.1:6379/12", backend="redis://127.0.0.1:6379/12")
app.conf.update(
    task_default_queue=f"docs-{uuid.uuid4().hex[:8]}",
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    result_expires=300,
)


@contextlib.contextmanager
def worker() -> Iterator[None]:
    with start_worker(app, pool="threads", perform_ping_check=False, shutdown_timeout=10):
        yield
