"""Threads, Timers, thread pools and asyncio executors carry identity and rebuild the user."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer

import otel_identity as oi
from otel_identity import _telemetry, names
from tests.otel_identity_threading.probes import User, load_user

pytestmark = pytest.mark.usefixtures("instrumented")


def _delta(before: dict[tuple[str, str], int], hop: str, outcome: str) -> int:
    return _telemetry.hop_counts().get((hop, outcome), 0) - before.get((hop, outcome), 0)


def _seen() -> tuple[str | None, str | None]:
    identity = oi.get_identity()
    return (identity.user_id, identity.tenant_id) if identity else (None, None)


# --- threading.Thread and Timer --------------------------------------------------------------


def test_thread_sees_identity_captured_at_start_not_at_construction() -> None:
    seen: list[Any] = []
    thread = threading.Thread(target=lambda: seen.append(_seen()))
    with oi.use_identity(user_id="u-start", tenant_id="t-start"):
        thread.start()
    thread.join()
    assert seen == [("u-start", "t-start")]


def test_thread_started_without_identity_sees_none() -> None:
    with oi.use_identity(user_id="u-built"):
        thread = threading.Thread(target=lambda: seen.append(_seen()))
    seen: list[Any] = []
    thread.start()
    thread.join()
    assert seen == [(None, None)]


def test_timer_carries_identity() -> None:
    seen: list[Any] = []
    timer = threading.Timer(0.001, lambda: seen.append(_seen()))
    with oi.use_identity(user_id="u-timer", tenant_id="t-timer"):
        timer.start()
    timer.join()
    assert seen == [("u-timer", "t-timer")]


def test_thread_hop_is_counted_and_rebuilds_its_own_user() -> None:
    oi.set_user_resolver(load_user)
    seen: dict[str, Any] = {}

    def branch() -> None:
        seen["user"] = oi.get_current_user()
        seen["again"] = oi.get_current_user()
        seen["hop"] = oi.hop_state()

    before = _telemetry.hop_counts()
    with oi.use_identity(user_id="u-1", tenant_id="acme"):
        parent_user = oi.get_current_user()
        thread = threading.Thread(target=branch)
        thread.start()
        thread.join()
    assert _delta(before, names.HOP_THREAD, names.OUTCOME_PRESENT) == 1
    assert isinstance(seen["user"], User)
    assert seen["user"].current_tenant == "acme"
    assert seen["user"] is not parent_user  # resolved in the branch, not handed over
    assert seen["again"] is seen["user"]  # once per hop
    assert seen["hop"].hop == names.HOP_THREAD


def test_data_set_in_a_child_thread_never_leaks_back_to_the_parent() -> None:
    def child() -> None:
        otel_context.attach(oi.set_identity(user_id="u-child", tenant_id="t-child"))

    with oi.use_identity(user_id="u-parent", tenant_id="t-parent"):
        thread = threading.Thread(target=child)
        thread.start()
        thread.join()
        assert _seen() == ("u-parent", "t-parent")
    assert oi.get_identity() is None


def test_thread_span_parents_to_sender_and_carries_identity(
    tracer: Tracer, spans: InMemorySpanExporter
) -> None:
    def branch() -> None:
        with tracer.start_as_current_span("branch"):
            pass

    with (
        oi.use_identity(user_id="u-span", tenant_id="t-span"),
        tracer.start_as_current_span("request"),
    ):
        thread = threading.Thread(target=branch)
        thread.start()
        thread.join()
    by_name = {s.name: s for s in spans.get_finished_spans()}
    assert by_name["branch"].parent is not None
    assert by_name["branch"].parent.span_id == by_name["request"].context.span_id
    assert by_name["branch"].attributes is not None
    assert by_name["branch"].attributes[names.USER_ID] == "u-span"
    assert by_name["branch"].attributes[names.TENANT_ID] == "t-span"


# --- ThreadPoolExecutor ------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 8])
def test_ten_thousand_interleaved_tasks_see_exactly_their_own_identity(workers: int) -> None:
    oi.set_user_resolver(load_user)
    rng = random.Random(workers)
    users = [f"u-{i}" for i in range(40)] + [None] * 5  # some tasks carry no identity at all
    tenants = [f"t-{i}" for i in range(7)]

    def task(expected: tuple[str | None, str | None]) -> tuple[Any, ...]:
        first = _seen()
        time.sleep(0)  # let the other workers interleave between the two reads
        user = oi.get_current_user()
        user_view = None if user is None else (user.id, user.current_tenant)
        return expected, first, _seen(), user_view

    futures = []
    with ThreadPoolExecutor(workers) as pool:
        for _ in range(10_000):
            user_id = rng.choice(users)
            expected = (user_id, rng.choice(tenants) if user_id else None)
            if user_id is None:
                futures.append(pool.submit(task, expected))
                continue
            token = otel_context.attach(oi.set_identity(user_id=user_id, tenant_id=expected[1]))
            try:
                futures.append(pool.submit(task, expected))
            finally:
                otel_context.detach(token)
        results = [f.result() for f in futures]

    mismatches = [r for r in results if r[0][0] is not None and not r[0] == r[1] == r[2] == r[3]]
    stale = [
        r
        for r in results
        if r[0][0] is None and (r[1], r[2], r[3]) != ((None, None),) * 2 + (None,)
    ]
    assert len(results) == 10_000
    assert sum(1 for r in results if r[0][0] is None) > 500  # the no-identity case was exercised
    assert mismatches == []
    assert stale == []


def test_pool_map_carries_identity_to_every_item() -> None:
    with ThreadPoolExecutor(4) as pool, oi.use_identity(user_id="u-map", tenant_id="t-map"):
        assert set(pool.map(lambda _: _seen(), range(50))) == {("u-map", "t-map")}


def test_prewarmed_worker_sees_no_identity_for_a_task_submitted_without_one() -> None:
    with ThreadPoolExecutor(1) as pool:
        with oi.use_identity(user_id="u-warm", tenant_id="t-warm"):
            assert pool.submit(_seen).result() == ("u-warm", "t-warm")  # starts the worker
        assert pool.submit(_seen).result() == (None, None)


def test_task_that_leaks_its_context_does_not_lend_it_to_the_next_task() -> None:
    # A buggy task attaches and never detaches: the worker thread now holds that identity,
    # which is how a reused worker served one tenant's job under another's tenant.
    def leaky() -> None:
        otel_context.attach(oi.set_identity(user_id="u-leak", tenant_id="t-leak"))

    with ThreadPoolExecutor(1) as pool:
        pool.submit(leaky).result()
        assert pool.submit(_seen).result() == (None, None)
        with oi.use_identity(user_id="u-next", tenant_id="t-next"):
            assert pool.submit(_seen).result() == ("u-next", "t-next")


def test_pool_hops_are_counted_per_task() -> None:
    before = _telemetry.hop_counts()
    with ThreadPoolExecutor(2) as pool:
        with oi.use_identity(user_id="u-count"):
            for f in [pool.submit(_seen) for _ in range(5)]:
                f.result()
        pool.submit(_seen).result()
    assert _delta(before, names.HOP_THREAD, names.OUTCOME_PRESENT) == 5
    assert _delta(before, names.HOP_THREAD, names.OUTCOME_MISSING) == 1


def test_hop_counter_exports_thread_data_points(metric_reader: InMemoryMetricReader) -> None:
    with ThreadPoolExecutor(1) as pool, oi.use_identity(user_id="u-metric"):
        pool.submit(_seen).result()
    data = metric_reader.get_metrics_data()
    assert data is not None
    points = [
        point
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == names.METRIC_HOPS
        for point in metric.data.data_points
    ]
    attrs = [dict(p.attributes or {}) for p in points]
    assert {names.ATTR_HOP: names.HOP_THREAD, names.ATTR_OUTCOME: names.OUTCOME_PRESENT} in attrs


def test_each_task_resolves_its_own_user_object() -> None:
    oi.set_user_resolver(load_user)
    with ThreadPoolExecutor(1) as pool, oi.use_identity(user_id="u-obj", tenant_id="t-obj"):
        sender = oi.get_current_user()
        first = pool.submit(oi.get_current_user).result()
        second = pool.submit(oi.get_current_user).result()
    assert first.id == second.id == sender.id == "u-obj"
    assert first is not sender
    assert second is not first  # a new hop, a new user object: no carry-over between tasks


def test_suppressed_instrumentation_hands_over_no_hop() -> None:
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    before = _telemetry.hop_counts()
    with ThreadPoolExecutor(1) as pool, oi.use_identity(user_id="u-sup"):
        with suppress_instrumentation():
            assert pool.submit(_seen).result() == (None, None)
    assert _delta(before, names.HOP_THREAD, names.OUTCOME_PRESENT) == 0


# --- asyncio -------------------------------------------------------------------------------


def test_run_in_executor_default_executor_carries_identity_and_counts_a_hop() -> None:
    oi.set_user_resolver(load_user)

    async def main() -> tuple[Any, Any]:
        loop = asyncio.get_running_loop()
        with oi.use_identity(user_id="u-rie", tenant_id="t-rie"):
            user = await loop.run_in_executor(None, oi.get_current_user)
            return await loop.run_in_executor(None, _seen), user

    before = _telemetry.hop_counts()
    seen, user = asyncio.run(main())
    assert seen == ("u-rie", "t-rie")
    assert (user.id, user.current_tenant) == ("u-rie", "t-rie")
    assert _delta(before, names.HOP_THREAD, names.OUTCOME_PRESENT) == 2


def test_run_in_executor_custom_executor_carries_identity() -> None:
    async def main() -> Any:
        with ThreadPoolExecutor(3) as pool, oi.use_identity(user_id="u-custom"):
            loop = asyncio.get_running_loop()
            return await asyncio.gather(*(loop.run_in_executor(pool, _seen) for _ in range(6)))

    assert asyncio.run(main()) == [("u-custom", None)] * 6


def test_to_thread_counts_the_hop_and_rebuilds_the_user_in_the_thread() -> None:
    oi.set_user_resolver(load_user)

    def branch() -> tuple[Any, Any, Any]:
        return oi.get_current_user(), oi.get_current_user(), oi.hop_state()

    async def main() -> tuple[Any, ...]:
        with oi.use_identity(user_id="u-tt", tenant_id="t-tt"):
            parent = oi.get_current_user()
            return (parent, *await asyncio.to_thread(branch))

    before = _telemetry.hop_counts()
    parent, user, again, hop = asyncio.run(main())
    assert _delta(before, names.HOP_THREAD, names.OUTCOME_PRESENT) == 1
    assert hop is not None
    assert hop.hop == names.HOP_THREAD  # the hop is the context to_thread's function sees
    assert user.current_tenant == "t-tt"
    assert user is not parent
    assert again is user  # cached for the hop: the hop's slot belongs to this thread


def test_gather_and_a_child_task_that_changes_identity_do_not_leak_back() -> None:
    async def child(name: str) -> tuple[str | None, str | None]:
        with oi.use_identity(user_id=f"u-{name}", tenant_id="t-child"):
            await asyncio.sleep(0)
            return await asyncio.to_thread(_seen)

    async def main() -> tuple[Any, Any, Any]:
        with oi.use_identity(user_id="u-parent", tenant_id="t-parent"):
            results = await asyncio.gather(child("a"), child("b"))
            task = asyncio.create_task(child("c"))
            await task
            return results, task.result(), _seen()

    results, task_result, after = asyncio.run(main())
    assert results == [("u-a", "t-child"), ("u-b", "t-child")]
    assert task_result == ("u-c", "t-child")
    assert after == ("u-parent", "t-parent")


def test_child_task_changing_identity_with_attach_does_not_leak_into_parent() -> None:
    async def child() -> None:
        otel_context.attach(oi.set_identity(user_id="u-rogue"))

    async def main() -> Any:
        with oi.use_identity(user_id="u-parent"):
            await asyncio.create_task(child())
            return _seen()

    assert asyncio.run(main()) == ("u-parent", None)


def test_run_in_executor_with_an_explicit_context_run_attaches_the_hop_inside_it() -> None:
    import contextvars

    def branch() -> tuple[Any, Any]:
        hop = oi.hop_state()
        return _seen(), None if hop is None else hop.hop

    async def main() -> Any:
        with oi.use_identity(user_id="u-ctxrun"):
            ctx = contextvars.copy_context()
            return await asyncio.get_running_loop().run_in_executor(None, ctx.run, branch)

    assert asyncio.run(main()) == (("u-ctxrun", None), names.HOP_THREAD)


def test_multiprocessing_thread_pool_created_under_an_identity_does_not_lend_it_to_tasks() -> None:
    from multiprocessing.pool import ThreadPool

    with oi.use_identity(user_id="u-creator", tenant_id="t-creator"):
        pool = ThreadPool(2)  # its workers and handler threads start here
    try:
        assert set(pool.map(lambda _: _seen(), range(8))) == {(None, None)}
    finally:
        pool.close()
        pool.join()


def test_thread_hop_without_identity_says_so_when_threads_require_one(
    tracer: Tracer, spans: InMemorySpanExporter
) -> None:
    oi.configure(required_hops=[names.HOP_THREAD])

    def branch() -> None:
        with tracer.start_as_current_span("branch"):
            pass

    with ThreadPoolExecutor(1) as pool:
        pool.submit(branch).result()
        with oi.use_identity(user_id="u-req"):
            pool.submit(branch).result()
    first, second = (s for s in spans.get_finished_spans() if s.name == "branch")
    assert [(e.name, dict(e.attributes or {}).get(names.ATTR_HOP)) for e in first.events] == [
        (names.EVENT_MISSING, names.HOP_THREAD)
    ]
    assert list(second.events) == []


def test_thread_subclass_that_overrides_run_is_a_hop_too() -> None:
    oi.set_user_resolver(load_user)

    class Branch(threading.Thread):
        def run(self) -> None:
            hop = oi.hop_state()
            self.seen = (_seen(), None if hop is None else hop.hop, oi.get_current_user())

    class Chained(Branch):
        def run(self) -> None:
            super().run()
            threading.Thread.run(self)  # reaches the class-level wrapper: no second hop

    before = _telemetry.hop_counts()
    threads = [Branch(), Chained()]
    with oi.use_identity(user_id="u-sub", tenant_id="t-sub"):
        for thread in threads:
            thread.start()
    for thread in threads:
        thread.join()
        seen = thread.seen  # type: ignore[attr-defined]
        assert seen[:2] == (("u-sub", "t-sub"), names.HOP_THREAD)
        assert seen[2].current_tenant == "t-sub"
        assert "run" not in thread.__dict__  # the per-start wrapper removed itself
    assert _delta(before, names.HOP_THREAD, names.OUTCOME_PRESENT) == 2
