"""The pool hop made at the work item: both work-item shapes, cancellation, errors, nesting.

``WrappingHopWorkItem`` is what Python 3.14+ gets (its ``_WorkItem`` has another shape); it
only needs the task as ``(fn, args, kwargs)``, so it is tested here on this Python too (fed that
shape by a stand-in stdlib item), against the same checks.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import thread as futures_thread
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer
from otel_identity_threading import ThreadingIdentityInstrumentor, _pool

import otel_identity as oi
from otel_identity import _telemetry, names
from otel_identity._handoff import Handoff, enter, leave
from otel_identity._thread_state import current_handoff
from tests.otel_identity_threading.probes import load_user


class _Item314:
    """A stand-in for Python 3.14's ``_WorkItem``: ``(future, task)``, ``task = (fn, a, kw)``."""

    def __init__(self, future: Any, task: tuple[Any, tuple[Any, ...], dict[str, Any]]) -> None:
        self.future = future
        self.task = task

    def run(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        fn, args, kwargs = self.task
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self.future.set_exception(exc)
        else:
            self.future.set_result(result)


_Wrapping314 = _pool.task_hop_item(_Item314)


def _submitted_as_314(future: Any, fn: Any, args: Any, kwargs: Any) -> Any:
    """What 3.14's submit builds, from this Python's submit."""
    return _Wrapping314(future, (fn, args, kwargs))


@pytest.fixture(
    autouse=True,
    params=[_pool.HopWorkItem, _submitted_as_314],
    ids=["3.8-3.13-shape", "3.14-shape"],
)
def work_item(request: pytest.FixtureRequest) -> Iterator[type]:
    original = futures_thread._WorkItem
    ThreadingIdentityInstrumentor().instrument()
    futures_thread._WorkItem = request.param  # type: ignore[misc]
    try:
        yield _pool.HopWorkItem if request.param is _pool.HopWorkItem else _Wrapping314
    finally:
        futures_thread._WorkItem = _pool.WORK_ITEM  # type: ignore[misc]
        ThreadingIdentityInstrumentor().uninstrument()
        assert futures_thread._WorkItem is original


def _delta(before: dict[tuple[str, str], int], outcome: str) -> int:
    key = (names.HOP_THREAD, outcome)
    return _telemetry.hop_counts().get(key, 0) - before.get(key, 0)


def _view() -> tuple[Any, ...]:
    identity = oi.get_identity()
    hop = oi.hop_state()
    user = oi.get_current_user()
    return (
        identity.user_id if identity else None,
        hop.hop if hop else None,
        None if user is None else user.id,
        user is not None and user is oi.get_current_user(),
    )


def test_a_task_is_a_counted_hop_with_its_own_cached_user(work_item: type) -> None:
    oi.set_user_resolver(load_user)
    before = _telemetry.hop_counts()
    with ThreadPoolExecutor(1) as pool, oi.use_identity(user_id="u-wi", tenant_id="t-wi"):
        sender = oi.get_current_user()
        view = pool.submit(_view).result()
        task_user = pool.submit(oi.get_current_user).result()
    assert view == ("u-wi", names.HOP_THREAD, "u-wi", True)
    assert task_user is not sender
    assert _delta(before, names.OUTCOME_PRESENT) == 2


def test_the_worker_holds_no_hand_off_between_tasks(work_item: type) -> None:
    with ThreadPoolExecutor(1) as pool:
        with oi.use_identity(user_id="u-between"):
            inside = pool.submit(current_handoff).result()
        between = pool.submit(_view).result()
        after = pool.submit(current_handoff).result()
    assert isinstance(inside, work_item)
    assert between == (None, names.HOP_THREAD, None, False)
    assert after is not inside


def test_a_cancelled_task_neither_runs_nor_counts(work_item: type) -> None:
    gate = threading.Event()
    ran: list[int] = []
    before = _telemetry.hop_counts()
    with ThreadPoolExecutor(1) as pool, oi.use_identity(user_id="u-cancel"):
        blocker = pool.submit(gate.wait)
        doomed = pool.submit(ran.append, 1)
        assert doomed.cancel()
        gate.set()
        blocker.result()
    assert ran == []
    assert _delta(before, names.OUTCOME_PRESENT) == 1  # the blocker only


def test_a_task_that_raises_hands_the_error_to_its_future_and_leaves_the_hop(
    work_item: type,
) -> None:
    def boom() -> None:
        raise LookupError("in the task")

    with ThreadPoolExecutor(1) as pool:
        with oi.use_identity(user_id="u-boom"):
            failed = pool.submit(boom)
            with pytest.raises(LookupError, match="in the task"):
                failed.result()
        assert pool.submit(_view).result() == (None, names.HOP_THREAD, None, False)
        assert pool.submit(current_handoff).result() is not None  # a new, empty hop


def test_done_callbacks_run_after_the_hop_ended(work_item: type) -> None:
    seen: list[Any] = []
    with ThreadPoolExecutor(1) as pool:
        gate = threading.Event()
        pool.submit(gate.wait)
        with oi.use_identity(user_id="u-callback"):
            future = pool.submit(lambda: None)
        future.add_done_callback(lambda _: seen.append((oi.get_identity(), current_handoff())))
        gate.set()
        future.result()
        pool.shutdown(wait=True)
    assert seen == [(None, None)]


def test_identity_set_inside_a_task_gets_a_slot_of_its_own_in_the_same_hop(
    work_item: type,
) -> None:
    oi.set_user_resolver(load_user)

    def task() -> tuple[Any, ...]:
        first = oi.get_current_user()
        with oi.use_identity(user_id="u-inner"):
            inner = oi.get_current_user()
            hop = oi.hop_state()
            again = oi.get_current_user()
        return first.id, inner.id, inner is again, hop.hop if hop else None, oi.get_current_user()

    with ThreadPoolExecutor(1) as pool, oi.use_identity(user_id="u-outer"):
        first, inner, cached, hop, back = pool.submit(task).result()
    assert (first, inner, cached, hop) == ("u-outer", "u-inner", True, names.HOP_THREAD)
    assert back.id == "u-outer"


def test_spans_in_a_task_carry_the_captured_identity(
    work_item: type, tracer: Tracer, spans: InMemorySpanExporter
) -> None:
    def task() -> None:
        with tracer.start_as_current_span("in-task"):
            pass

    with ThreadPoolExecutor(1) as pool, oi.use_identity(user_id="u-span", tenant_id="t-span"):
        pool.submit(task).result()
    (span,) = [s for s in spans.get_finished_spans() if s.name == "in-task"]
    assert span.attributes is not None
    assert span.attributes[names.USER_ID] == "u-span"
    assert span.attributes[names.TENANT_ID] == "t-span"


def test_to_thread_makes_the_hop_inside_the_copied_context(work_item: type) -> None:
    oi.set_user_resolver(load_user)

    async def main() -> tuple[Any, ...]:
        with oi.use_identity(user_id="u-to-thread"):
            return await asyncio.to_thread(_view)

    assert asyncio.run(main()) == ("u-to-thread", names.HOP_THREAD, "u-to-thread", True)


def test_hand_offs_nest_in_one_thread_and_unwind_in_order() -> None:
    outer_ctx = oi.set_identity(user_id="u-outer-hop")
    inner_ctx = oi.set_identity(user_id="u-inner-hop")
    outer, inner = Handoff(outer_ctx), Handoff(inner_ctx)
    outer_token = enter(outer, names.HOP_THREAD)
    inner_token = enter(inner, names.HOP_THREAD)
    assert current_handoff() is inner
    assert oi.get_identity() == oi.Identity(user_id="u-inner-hop")
    leave(inner, inner_token)
    assert current_handoff() is outer
    assert oi.get_identity() == oi.Identity(user_id="u-outer-hop")
    leave(outer, outer_token)
    assert current_handoff() is None
    assert oi.get_identity() is None


def test_a_failing_enter_still_runs_the_task_on_the_captured_context(
    monkeypatch: pytest.MonkeyPatch, work_item: type
) -> None:
    from otel_identity import _handoff

    def broken(context: Any, hop: str) -> Any:
        raise RuntimeError("no hop state")

    monkeypatch.setattr(_handoff, "arrived_state", broken)
    internal: list[str] = []
    monkeypatch.setattr(_handoff._telemetry, "log_internal_error", internal.append)
    hop = Handoff(oi.set_identity(user_id="u-enter-fails"))
    result: list[Any] = []

    def in_fresh_thread() -> None:
        token = enter(hop, names.HOP_THREAD)
        result.append(oi.get_identity())
        leave(hop, token)
        result.append(oi.get_identity())

    thread = threading.Thread(target=in_fresh_thread)  # a thread that ran no hand-off yet
    thread.start()
    thread.join()
    assert result == [oi.Identity(user_id="u-enter-fails"), None]
    assert set(internal) == {"enter"}  # logged (the new thread's own hop fails alike)
