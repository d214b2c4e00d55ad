"""Celery against a real Redis broker: identity per task, never a previous task's."""

from __future__ import annotations

import base64
import contextlib
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import chain, chord, group, signals
from celery.contrib.testing.worker import start_worker
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from otel_identity_celery import CeleryIdentityInstrumentor
from wrapt import BaseObjectProxy as ObjectProxy

import otel_identity as oi
from otel_identity import _telemetry, names
from tests.otel_identity_celery import otel_identity_celery_tasks as tasks
from tests.services import need_service

ROOT = Path(__file__).resolve().parents[2]
# celery's Redis result backend calls a redis-py method redis-py deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")
TIMEOUT = 15


@pytest.fixture(scope="module", autouse=True)
def _redis_and_queue() -> None:
    need_service("redis", 6379)
    # A queue of our own per run: nothing left over from an earlier run is consumed.
    tasks.app.conf.task_default_queue = f"oi-celery-{uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def instrumented() -> Iterator[None]:
    """Ours first, OpenTelemetry's second: the order in which OTel's receiver would overwrite
    a header written in ``before_task_publish``."""
    CeleryIdentityInstrumentor().instrument()
    CeleryInstrumentor().instrument()
    yield
    CeleryInstrumentor().uninstrument()
    CeleryIdentityInstrumentor().uninstrument()
    tasks.app.conf.task_always_eager = False


@contextlib.contextmanager
def worker(pool: str = "threads", concurrency: int = 4) -> Iterator[None]:
    with start_worker(
        tasks.app,
        pool=pool,
        concurrency=concurrency,
        perform_ping_check=False,
        shutdown_timeout=10,
    ):
        yield


@contextlib.contextmanager
def probes() -> Iterator[list[Any]]:
    """What the worker thread's context holds just outside each task (before its prerun
    receivers and after its postrun receivers): no identity may be left there. Enter it
    before the worker starts: stopping the worker waits for the last postrun."""
    seen: list[Any] = []

    def before(**_: Any) -> None:
        seen.append(("before", oi.get_identity()))

    def after(**_: Any) -> None:
        seen.append(("after", oi.get_identity()))

    signals.task_prerun.connect(before, weak=False)
    signals.task_postrun.connect(after, weak=False)
    # Receivers run in connection order; the "before" probe must run ahead of every other
    # prerun receiver (OpenTelemetry's attaches its own context) to see the bare thread.
    signals.task_prerun.receivers.insert(0, signals.task_prerun.receivers.pop())
    signals.task_prerun.sender_receivers_cache.clear()
    try:
        yield seen
    finally:
        signals.task_prerun.disconnect(before)
        signals.task_postrun.disconnect(after)


def consumer_spans(spans: InMemorySpanExporter, task_id: str) -> list[ReadableSpan]:
    return [
        s
        for s in spans.get_finished_spans()
        if s.kind is not SpanKind.PRODUCER
        and (s.attributes or {}).get("messaging.message.id") == task_id
    ]


def wait_for_span(spans: InMemorySpanExporter, task_id: str) -> ReadableSpan:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        found = consumer_spans(spans, task_id)
        if found:
            return found[0]
        time.sleep(0.02)
    raise AssertionError(f"no consumer span for task {task_id}")


def event_names(span: ReadableSpan) -> list[str]:
    return [e.name for e in span.events]


ALICE = {"user_id": "alice", "tenant_id": "acme"}


class TestWorker:
    def test_task_runs_under_the_identity_it_was_published_with(
        self, spans: InMemorySpanExporter
    ) -> None:
        key = (names.HOP_QUEUE_CONSUME, names.OUTCOME_PRESENT)
        before = _telemetry.hop_counts().get(key, 0)
        with worker():
            with oi.use_identity(**ALICE):
                result = tasks.whoami.delay("a")
            assert result.get(timeout=TIMEOUT) == ["a", ["alice", "acme"]]
            span = wait_for_span(spans, result.id)
        assert _telemetry.hop_counts().get(key, 0) - before == 1
        assert span.attributes is not None
        assert span.attributes["tenant.id"] == "acme"
        assert names.EVENT_MISSING not in event_names(span)

    @pytest.mark.parametrize("with_otel", [True, False], ids=["otel-celery", "alone"])
    @pytest.mark.parametrize("pool", ["solo", "threads"])
    def test_task_without_identity_after_one_with_sees_none_and_records_missing(
        self, spans: InMemorySpanExporter, tracer: Any, pool: str, with_otel: bool
    ) -> None:
        if not with_otel:
            # Without OpenTelemetry's consumer span the event goes on the task's first span.
            CeleryInstrumentor().uninstrument()
            tasks.SPAN_IN_TASK = True
        with probes() as outside, worker(pool, concurrency=1):
            for i in range(5):
                with oi.use_identity(user_id=f"u{i}", tenant_id=f"t{i}"):
                    first = tasks.whoami.delay("with")
                assert first.get(timeout=TIMEOUT) == ["with", [f"u{i}", f"t{i}"]]
                second = tasks.whoami.delay("without")
                assert second.get(timeout=TIMEOUT) == ["without", None]
            span = wait_for_span(spans, second.id)
            tasks.SPAN_IN_TASK = False
        assert names.EVENT_MISSING in event_names(span)
        missing = next(e for e in span.events if e.name == names.EVENT_MISSING)
        assert (missing.attributes or {})[names.ATTR_HOP] == names.HOP_QUEUE_CONSUME
        assert len(outside) == 20
        assert all(identity is None for _, identity in outside), outside

    def test_task_names_listed_as_anonymous_routes_record_no_missing_event(
        self, spans: InMemorySpanExporter
    ) -> None:
        # The task name is the hop's route. (OpenTelemetry's consumer span is left out here:
        # the span processor matches its name, "run/<task>", at span start.)
        CeleryInstrumentor().uninstrument()
        oi.configure(anonymous_routes=["oi.who*"])
        tasks.SPAN_IN_TASK = True
        try:
            with worker("threads", concurrency=1):
                anonymous = tasks.whoami.delay("cron")
                assert anonymous.get(timeout=TIMEOUT) == ["cron", None]
                span = wait_for_span(spans, anonymous.id)
        finally:
            tasks.SPAN_IN_TASK = False
        assert span.name == "whoami"
        assert names.EVENT_MISSING not in event_names(span)

    def test_a_task_that_raises_does_not_leak_identity_into_the_next(self) -> None:
        with probes() as outside, worker("threads", concurrency=1):
            with oi.use_identity(**ALICE):
                failed = tasks.fail.delay()
            with pytest.raises(RuntimeError, match="on purpose"):
                failed.get(timeout=TIMEOUT)
            assert tasks.whoami.delay("next").get(timeout=TIMEOUT) == ["next", None]
        assert [identity for _, identity in outside] == [None] * 4

    def test_chains_groups_chords_retries_and_child_tasks_carry_identity(self) -> None:
        with worker():
            with oi.use_identity(**ALICE):
                chained = chain(tasks.append.s([], "x"), tasks.append.s("y")).apply_async()
                grouped = group(tasks.whoami.s(i) for i in range(3)).apply_async()
                chorded = chord([tasks.whoami.s(i) for i in range(3)], tasks.collect.s())()
                retried = tasks.retry_once.delay()
                spawned = tasks.spawn.delay("child")
            who = ["alice", "acme"]
            assert chained.get(timeout=TIMEOUT) == [["x", who], ["y", who]]
            assert grouped.get(timeout=TIMEOUT) == [[i, who] for i in range(3)]
            assert chorded.get(timeout=TIMEOUT) == [[[i, who] for i in range(3)], who]
            assert retried.get(timeout=TIMEOUT) == [1, who]
            child = tasks.app.AsyncResult(spawned.get(timeout=TIMEOUT))
            assert child.get(timeout=TIMEOUT) == ["child", who]

    def test_current_user_is_rebuilt_for_every_task(self) -> None:
        serial = iter(range(1, 1000))

        def resolve(identity: oi.Identity) -> dict[str, Any]:
            return {"user_id": identity.user_id, "serial": next(serial)}

        oi.set_user_resolver(resolve)
        with oi.use_identity(**ALICE):
            assert oi.get_current_user()["serial"] == 1  # the publisher's own user object
            with worker("threads", concurrency=1):
                results = [tasks.user.delay() for _ in range(3)]
                users = [r.get(timeout=TIMEOUT) for r in results]
        assert users == [[["alice", "acme"], ["alice", n]] for n in (2, 3, 4)]

    def test_thousand_tasks_with_random_identities_across_four_threads_never_mix(self) -> None:
        rng = random.Random(5)
        expected: list[Any] = []
        with worker("threads", concurrency=4):
            results = []
            for i in range(1000):
                if rng.random() < 0.2:
                    want = None
                    results.append(tasks.whoami.delay(i))
                else:
                    want = [f"user-{rng.randrange(50)}", f"tenant-{rng.randrange(7)}"]
                    with oi.use_identity(user_id=want[0], tenant_id=want[1]):
                        results.append(tasks.whoami.delay(i))
                expected.append([i, want])
            got = [r.get(timeout=TIMEOUT) for r in results]
        mismatches = [(e, g) for e, g in zip(expected, got, strict=True) if e != g]
        assert mismatches == []


class TestEager:
    def test_apply_runs_under_the_callers_identity_as_a_new_hop(self) -> None:
        calls: list[str | None] = []

        def resolve(identity: oi.Identity) -> dict[str, Any]:
            calls.append(identity.user_id)
            return {"user_id": identity.user_id, "serial": len(calls)}

        oi.set_user_resolver(resolve)
        with oi.use_identity(**ALICE):
            oi.get_current_user()
            assert tasks.user.apply().get() == [["alice", "acme"], ["alice", 2]]
            assert oi.get_identity() == oi.Identity(user_id="alice", tenant_id="acme")
        assert tasks.whoami.apply(("anon",)).get() == ["anon", None]
        assert oi.get_identity() is None

    def test_task_always_eager_delay_and_chains(self) -> None:
        tasks.app.conf.task_always_eager = True
        with oi.use_identity(**ALICE):
            assert tasks.whoami.delay("e").get() == ["e", ["alice", "acme"]]
            chained = chain(tasks.append.s([], "x"), tasks.append.s("y")).apply_async()
            assert chained.get() == [["x", ["alice", "acme"]], ["y", ["alice", "acme"]]]
        assert tasks.whoami.delay("e").get() == ["e", None]


class TestInstrumentation:
    @pytest.mark.parametrize("ours_first", [True, False])
    def test_signed_identity_survives_otels_celery_instrumentation_in_either_order(
        self, ours_first: bool
    ) -> None:
        CeleryInstrumentor().uninstrument()
        CeleryIdentityInstrumentor().uninstrument()
        first, second = (
            (CeleryIdentityInstrumentor(), CeleryInstrumentor())
            if ours_first
            else (CeleryInstrumentor(), CeleryIdentityInstrumentor())
        )
        first.instrument()
        second.instrument()
        oi.configure(signing_keys={"k1": base64.b64encode(b"k" * 32).decode()})
        with worker("threads", concurrency=1):
            with oi.use_identity(**ALICE):
                result = tasks.verified.delay()
            assert result.get(timeout=TIMEOUT) == [["alice", "acme"], True]

    def test_uninstrument_stops_propagation_and_double_instrument_wraps_once(self) -> None:
        import celery.app.trace
        import kombu.messaging

        CeleryInstrumentor().uninstrument()
        CeleryIdentityInstrumentor().instrument()  # a second time: a no-op
        publish = kombu.messaging.Producer.publish
        assert isinstance(publish, ObjectProxy)
        assert not isinstance(publish.__wrapped__, ObjectProxy)
        with worker("threads", concurrency=1):
            with oi.use_identity(**ALICE):
                assert tasks.whoami.delay(1).get(timeout=TIMEOUT) == [1, ["alice", "acme"]]
            CeleryIdentityInstrumentor().uninstrument()
            assert not isinstance(kombu.messaging.Producer.publish, ObjectProxy)
            assert not isinstance(celery.app.trace.send_prerun, ObjectProxy)
            with oi.use_identity(**ALICE):
                assert tasks.whoami.delay(2).get(timeout=TIMEOUT) == [2, None]
            CeleryIdentityInstrumentor().instrument()
            with oi.use_identity(**ALICE):
                assert tasks.whoami.delay(3).get(timeout=TIMEOUT) == [3, ["alice", "acme"]]

    def test_hostile_headers_on_the_task_message_never_break_the_task(
        self, spans: InMemorySpanExporter
    ) -> None:
        hostile = {
            "baggage": "user.id=%ZZ,tenant.id=\x00\x01;;;,=,,",
            "traceparent": "00-zz-zz-zz",
            "tracestate": "\ufffd" * 50,
        }
        control = {"baggage": "user.id=a%00b,tenant.id=t%07"}
        with worker("threads", concurrency=1):
            result = tasks.whoami.apply_async(("h",), headers=hostile)
            assert result.get(timeout=TIMEOUT)[0] == "h"
            rejected = tasks.whoami.apply_async(("c",), headers=control)
            assert rejected.get(timeout=TIMEOUT) == ["c", None]
            span = wait_for_span(spans, rejected.id)
        reasons = [
            (e.attributes or {}).get(names.ATTR_REJECT_REASON)
            for e in span.events
            if e.name == names.EVENT_REJECTED
        ]
        assert reasons == [names.REASON_MALFORMED]


def _prefork_worker(queue: str) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        OI_CELERY_WORKER="1",
        OI_CELERY_QUEUE=queue,
        OI_CELERY_BROKER=tasks.BROKER,
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.otel_identity_celery.otel_identity_celery_tasks",
            "worker",
            "-P",
            "prefork",
            "-c",
            "4",
            "-Q",
            queue,
            "-l",
            "WARNING",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_thousand_tasks_across_four_prefork_processes_never_mix() -> None:
    queue = f"oi-prefork-{uuid.uuid4().hex[:8]}"
    proc = _prefork_worker(queue)
    try:
        rng = random.Random(7)
        expected: list[Any] = []
        results = []
        for i in range(1000):
            want: list[str] | None
            if i % 2 == 1 and rng.random() < 0.4:
                want = None
                results.append(tasks.whoami.apply_async((i,), queue=queue))
            else:
                want = [f"user-{rng.randrange(50)}", f"tenant-{rng.randrange(7)}"]
                with oi.use_identity(user_id=want[0], tenant_id=want[1]):
                    results.append(tasks.whoami.apply_async((i,), queue=queue))
            expected.append([i, want])
        got = [r.get(timeout=25) for r in results]
        mismatches = [(e, g) for e, g in zip(expected, got, strict=True) if e != g]
        assert mismatches == []
        assert any(w is None for _, w in expected)
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert b"Traceback" not in err, err.decode(errors="replace")[-2000:]
