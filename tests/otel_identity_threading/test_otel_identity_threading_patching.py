"""The patching itself: reversible, idempotent, transparent, and order-independent next to
OpenTelemetry's own threading instrumentation."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures import thread as futures_thread
from multiprocessing import process
from typing import Any

import pytest
from opentelemetry.instrumentation.threading import ThreadingInstrumentor
from otel_identity_threading import (
    ThreadingIdentityInstrumentor,
    _patching,
    _pool,
    _processes,
    _threads,
)

import otel_identity as oi
from otel_identity import _telemetry, names
from otel_identity._thread_state import current_handoff
from tests.otel_identity_threading.probes import load_user

PATCHED = [
    (threading.Thread, "start"),
    (threading.Thread, "run"),
    (threading.Timer, "run"),
    (ProcessPoolExecutor, "submit"),
    (process.BaseProcess, "start"),
]
ORIGINAL = {(owner, name): owner.__dict__[name] for owner, name in PATCHED}
ORIGINAL_WORK_ITEM = futures_thread._WorkItem
ORIGINAL_SUBMIT = ThreadPoolExecutor.__dict__["submit"]
OURS = {(o, n): w for o, n, w in _threads.TARGETS + _processes.TARGETS}


@pytest.fixture(autouse=True)
def _all_off() -> Iterator[None]:
    yield
    ThreadingIdentityInstrumentor().uninstrument()
    ThreadingInstrumentor().uninstrument()
    # ThreadingInstrumentor's own uninstrument leaves a bound wrapper of its old chain as
    # Timer.start (it wraps the inherited Thread.start there; unwrap rebinds it): a later
    # instrument would stack on that stale chain, so each test starts from the real original.
    if "start" in threading.Timer.__dict__:
        del threading.Timer.start
    for owner, name in PATCHED:
        assert owner.__dict__[name] is ORIGINAL[(owner, name)], (
            f"{owner.__name__}.{name} left patched"
        )
    assert futures_thread._WorkItem is ORIGINAL_WORK_ITEM


def _ours_in_chain(owner: type, name: str) -> int:
    wrapper = OURS[(owner, name)]
    count, node = 0, owner.__dict__[name]
    while hasattr(node, "__wrapped__"):
        count += _patching.is_ours(node, wrapper)
        node = node.__wrapped__
    return count


def _hop_view() -> tuple[Any, ...]:
    identity = oi.get_identity()
    hop = oi.hop_state()
    user = oi.get_current_user()
    return (
        identity.user_id if identity else None,
        hop.hop if hop else None,
        user is not None and user is oi.get_current_user(),  # cached: the hop's own slot
    )


def _via_thread() -> tuple[Any, ...]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(_hop_view()))
    thread.start()
    thread.join()
    return tuple(out[0])


def _via_timer() -> tuple[Any, ...]:
    out: list[Any] = []
    timer = threading.Timer(0.0, lambda: out.append(_hop_view()))
    timer.start()
    timer.join()
    return tuple(out[0])


def _via_pool() -> tuple[Any, ...]:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(_hop_view).result()


def _views() -> list[tuple[Any, ...]]:
    oi.set_user_resolver(load_user)
    with oi.use_identity(user_id="u-co", tenant_id="t-co"):
        return [_via_thread(), _via_timer(), _via_pool()]


FULL_HOP = ("u-co", names.HOP_THREAD, True)


def test_instrument_and_uninstrument_restore_the_exact_originals() -> None:
    instrumentor = ThreadingIdentityInstrumentor()
    instrumentor.instrument()
    for owner, name in PATCHED:
        assert owner.__dict__[name] is not ORIGINAL[(owner, name)]
        assert _ours_in_chain(owner, name) == 1
    assert futures_thread._WorkItem is _pool.WORK_ITEM
    assert ThreadPoolExecutor.__dict__["submit"] is ORIGINAL_SUBMIT  # pools: no wrapper at all
    instrumentor.uninstrument()
    for owner, name in PATCHED:
        assert owner.__dict__[name] is ORIGINAL[(owner, name)]
    assert futures_thread._WorkItem is ORIGINAL_WORK_ITEM
    assert _views() == [(None, None, False)] * 3  # nothing carried any more


def test_double_instrument_wraps_once_and_uninstrument_is_idempotent() -> None:
    ThreadingIdentityInstrumentor().instrument()
    ThreadingIdentityInstrumentor().instrument()
    for owner, name in PATCHED:
        assert _ours_in_chain(owner, name) == 1
    before = _telemetry.hop_counts()
    assert _views() == [FULL_HOP] * 3
    assert (
        _telemetry.hop_counts()[(names.HOP_THREAD, names.OUTCOME_PRESENT)]
        - before.get((names.HOP_THREAD, names.OUTCOME_PRESENT), 0)
        == 3
    )  # one hop each, not two
    ThreadingIdentityInstrumentor().uninstrument()
    ThreadingIdentityInstrumentor().uninstrument()


def test_wrappers_keep_the_patched_functions_names() -> None:
    ThreadingIdentityInstrumentor().instrument()
    assert threading.Thread.start.__qualname__ == "Thread.start"
    assert threading.Thread.run.__qualname__ == "Thread.run"
    assert threading.Timer.run.__qualname__ == "Timer.run"
    assert ProcessPoolExecutor.submit.__qualname__ == "ProcessPoolExecutor.submit"
    assert process.BaseProcess.start.__qualname__ == "BaseProcess.start"
    assert threading.Thread.__dict__["start"].__wrapped__ is ORIGINAL[(threading.Thread, "start")]


def test_a_pool_task_is_the_hop_itself_with_the_callable_untouched() -> None:
    ThreadingIdentityInstrumentor().instrument()
    items: list[Any] = []

    class Pool(ThreadPoolExecutor):
        pass

    def fn() -> None:
        items.append(current_handoff())

    with Pool(1) as pool, oi.use_identity(user_id="u-item"):
        pool.submit(fn).result()
    assert type(items[0]) is _pool.WORK_ITEM
    if _pool.WORK_ITEM is _pool.HopWorkItem:  # before 3.14
        assert items[0].fn is fn  # no wrapper around the user's callable
    assert items[0].identity == oi.Identity(user_id="u-item")  # the item was the hop's slot


@pytest.mark.parametrize("ours_first", [True, False], ids=["ours-first", "contrib-first"])
def test_coexists_with_threading_instrumentor_in_either_load_order(ours_first: bool) -> None:
    order: list[Any] = [ThreadingIdentityInstrumentor(), ThreadingInstrumentor()]
    for instrumentor in order if ours_first else order[::-1]:
        instrumentor.instrument()
    for owner, name in PATCHED:
        assert _ours_in_chain(owner, name) == 1
    before = _telemetry.hop_counts()
    # Our hop is the context the work runs in (user cached in its slot), whichever came first.
    assert _views() == [FULL_HOP] * 3
    delta = _telemetry.hop_counts()[(names.HOP_THREAD, names.OUTCOME_PRESENT)] - before.get(
        (names.HOP_THREAD, names.OUTCOME_PRESENT), 0
    )
    assert delta == 3


@pytest.mark.parametrize(
    ("ours_first", "ours_off_first"),
    list(itertools.product([True, False], [True, False])),
    ids=str,
)
def test_uninstrument_in_either_order_leaves_the_other_working_then_the_originals(
    ours_first: bool, ours_off_first: bool
) -> None:
    ours, contrib = ThreadingIdentityInstrumentor(), ThreadingInstrumentor()
    for instrumentor in (ours, contrib) if ours_first else (contrib, ours):
        instrumentor.instrument()
    if ours_off_first:
        ours.uninstrument()
        for owner, name in PATCHED:
            assert _ours_in_chain(owner, name) == 0
        # contrib alone: the context travels, but no hop of ours is made.
        assert _views() == [("u-co", None, False)] * 3
        contrib.uninstrument()
    else:
        contrib.uninstrument()
        for owner, name in PATCHED:
            assert _ours_in_chain(owner, name) == 1
        assert _views() == [FULL_HOP] * 3
        ours.uninstrument()
    for owner, name in PATCHED:
        assert owner.__dict__[name] is ORIGINAL[(owner, name)]
