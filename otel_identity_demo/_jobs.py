"""The demo's queue hop: an in-process ``IdentityQueue`` by default, or Celery over a broker.

Either way the worker's code only starts its span and reads ``oi.current_user``: the queue
(``IdentityQueue``) or the instrumentation (``CeleryIdentityInstrumentor``) runs each job
under the identity it was published with, and none if it had none.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.trace import SpanKind

import otel_identity as oi
from otel_identity_demo._errors import DemoError


class Jobs(Protocol):
    name: str

    def __enter__(self) -> Jobs: ...
    def __exit__(self, *exc_info: object) -> None: ...
    def publish(self, section: str) -> None: ...
    def wait_for(self, count: int) -> None: ...


def process(tracer: trace.Tracer, section: str, done: list[str]) -> None:
    """The worker's code: no identity in sight, yet it knows who asked."""
    with tracer.start_as_current_span(f"process {section}", kind=SpanKind.CONSUMER):
        user = oi.current_user
        done.append(f"{section}: {user.name if user else '<no user>'}")


def _wait(done: list[str], count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while len(done) < count and time.monotonic() < deadline:
        time.sleep(0.02)


class InProcessJobs:
    """A ``queue.Queue`` wrapped in ``oi.IdentityQueue``, drained by one worker thread."""

    name = "in-process queue"

    def __init__(self, tracer: trace.Tracer, done: list[str]) -> None:
        self.tracer = tracer
        self.done = done
        self.jobs: oi.IdentityQueue[str] = oi.IdentityQueue(queue.Queue())
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._drain, name="worker", daemon=True)

    def __enter__(self) -> InProcessJobs:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)

    def publish(self, section: str) -> None:
        self.jobs.put(section)

    def wait_for(self, count: int) -> None:
        _wait(self.done, count)

    def _drain(self) -> None:
        while True:  # until __exit__ sets stop (a daemon thread: never holds the process)
            try:
                envelope = self.jobs.get(timeout=0.1)
            except queue.Empty:
                if self.stop.is_set():
                    return
                continue
            with envelope as section:
                process(self.tracer, section, self.done)


class CeleryJobs:
    """A Celery app on ``broker`` with an in-process threads worker, instrumented."""

    def __init__(self, broker: str, tracer: trace.Tracer, done: list[str]) -> None:
        from celery import Celery

        self.name = f"Celery via {broker}"
        self.broker = broker
        self.done = done
        self.app = Celery("otel_identity_demo", broker=broker)
        self.app.conf.update(
            # A queue of this run's own: never pick up a job another run left behind.
            task_default_queue=f"otel-identity-demo-{uuid.uuid4().hex[:8]}",
            broker_connection_retry_on_startup=True,
            worker_hijack_root_logger=False,
            task_ignore_result=True,
        )

        @self.app.task(name="demo.process")  # type: ignore[untyped-decorator]
        def process_task(section: str) -> None:
            process(tracer, section, done)

        self.task: Any = process_task
        self._worker: Any = None
        self._instrumentor: Any = None

    def __enter__(self) -> CeleryJobs:
        from celery.contrib.testing.worker import start_worker
        from otel_identity_celery import CeleryIdentityInstrumentor

        self._reach_broker()
        self._instrumentor = CeleryIdentityInstrumentor()
        self._instrumentor.instrument()
        # Celery's worker sets the root logger's level for the whole process; put it back.
        self._root_level = logging.root.level
        self._worker = start_worker(
            self.app, pool="threads", concurrency=2, perform_ping_check=False
        )
        self._worker.__enter__()
        return self

    def _reach_broker(self) -> None:
        """Fail within seconds, in one line, when the broker does not answer: Celery itself
        would retry for ever (a closed port) or wait on a silent one."""
        # Short socket timeouts for this probe only: the worker keeps Celery's own.
        options = {"socket_timeout": 2, "socket_connect_timeout": 2}
        try:
            with self.app.connection_for_write(transport_options=options) as connection:
                connection.ensure_connection(
                    max_retries=1, interval_start=0, interval_step=0, timeout=4
                )
        except Exception as exc:  # noqa: BLE001 - any failure to connect, whatever the transport
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DemoError(f"cannot reach the broker {self.broker}: {reason}") from None

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._worker.__exit__(None, None, None)
        finally:
            self._instrumentor.uninstrument()
            logging.root.setLevel(self._root_level)

    def publish(self, section: str) -> None:
        self.task.delay(section)

    def wait_for(self, count: int) -> None:
        _wait(self.done, count)
