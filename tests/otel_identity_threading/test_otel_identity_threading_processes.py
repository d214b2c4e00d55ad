"""Process pools and multiprocessing.Process carry identity into the child under every start
method; the child counts a ``process`` hop and resolves its own user."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest

import otel_identity as oi
from otel_identity import _config, names
from tests.otel_identity_threading import probes

pytestmark = pytest.mark.usefixtures("instrumented")

METHODS = [
    m for m in ("spawn", "forkserver", "fork") if m in multiprocessing.get_all_start_methods()
]
PRESENT = (names.HOP_PROCESS, names.OUTCOME_PRESENT)
MISSING = (names.HOP_PROCESS, names.OUTCOME_MISSING)


@pytest.fixture(autouse=True)
def _resolver_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    # Spawned children start from scratch: they find the resolver through the environment.
    monkeypatch.setenv("OTEL_IDENTITY_RESOLVER", probes.RESOLVER)
    _config.reset_settings()


def _step(earlier: dict[str, Any], later: dict[str, Any], key: tuple[str, str]) -> int:
    return int(later["hops"].get(key, 0)) - int(earlier["hops"].get(key, 0))


@pytest.mark.parametrize("method", METHODS)
def test_process_pool_submit_and_map_carry_identity_and_resolve_in_the_child(method: str) -> None:
    context = multiprocessing.get_context(method)
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        with oi.use_identity(user_id="u-pp", tenant_id="t-pp"):
            first = pool.submit(probes.observe, "submit").result(timeout=20)
            mapped = list(pool.map(probes.observe, ["m1", "m2"], timeout=20))
        bare = pool.submit(probes.observe, "bare").result(timeout=20)

    for seen in (first, *mapped):
        assert (seen["user_id"], seen["tenant_id"]) == ("u-pp", "t-pp")
        assert seen["pid"] != os.getpid()
        assert seen["user"] == ("u-pp", "t-pp", seen["pid"])  # built in the child
        assert seen["same_user_twice"]
    assert _step(first, mapped[0], PRESENT) == 1
    assert _step(mapped[0], mapped[1], PRESENT) == 1
    # The same worker, reused, and a task submitted without identity: none, and said so.
    assert (bare["user_id"], bare["tenant_id"], bare["user"]) == (None, None, None)
    assert _step(mapped[1], bare, MISSING) == 1
    assert _step(mapped[1], bare, PRESENT) == 0


@pytest.mark.parametrize("method", METHODS)
def test_multiprocessing_process_carries_identity_and_resolves_in_the_child(method: str) -> None:
    context: Any = multiprocessing.get_context(method)
    queue = context.Queue()
    with oi.use_identity(user_id="u-proc", tenant_id="t-proc"):
        process = context.Process(target=probes.observe_into, args=(queue, "with"))
        process.start()
    seen = queue.get(timeout=20)
    process.join(timeout=20)
    assert process.exitcode == 0
    assert process._target is probes.observe_into  # the parent's is untouched
    assert (seen["user_id"], seen["tenant_id"]) == ("u-proc", "t-proc")
    assert seen["pid"] != os.getpid()
    assert seen["user"] == ("u-proc", "t-proc", seen["pid"])
    assert seen["hops"].get(PRESENT, 0) >= 1


@pytest.mark.parametrize("method", METHODS)
def test_process_started_without_identity_sees_none(method: str) -> None:
    context: Any = multiprocessing.get_context(method)
    queue = context.Queue()
    with oi.use_identity(user_id="u-construct"):
        process = context.Process(target=probes.observe_into, args=(queue, "without"))
    process.start()  # identity is taken at start, and there is none now
    seen = queue.get(timeout=20)
    process.join(timeout=20)
    assert (seen["user_id"], seen["tenant_id"], seen["user"]) == (None, None, None)


@pytest.mark.parametrize("method", METHODS)
def test_multiprocessing_pool_created_under_an_identity_does_not_lend_it_to_tasks(
    method: str,
) -> None:
    context = multiprocessing.get_context(method)
    with oi.use_identity(user_id="u-creator", tenant_id="t-creator"):
        pool = context.Pool(1)  # a forked worker would otherwise inherit this context
    try:
        seen = pool.apply(probes.observe, ("pooled",))
    finally:
        pool.close()
        pool.join()
    assert (seen["user_id"], seen["tenant_id"], seen["user"]) == (None, None, None)


def test_process_pool_machinery_threads_count_no_hop() -> None:
    from otel_identity import _telemetry

    before = _telemetry.hop_counts()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        with oi.use_identity(user_id="u-machinery"):
            pool.submit(probes.observe).result(timeout=20)
    after = _telemetry.hop_counts()
    thread_hops = sum(v - before.get(k, 0) for k, v in after.items() if k[0] == names.HOP_THREAD)
    assert thread_hops == 0  # the manager and queue feeder threads are not hops of the task


def test_run_in_executor_with_a_process_pool_carries_identity_into_the_child() -> None:
    import asyncio

    async def main() -> dict[str, Any]:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(1, mp_context=context) as pool:
            with oi.use_identity(user_id="u-aio", tenant_id="t-aio"):
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(pool, probes.observe, "aio")  # type: ignore[no-any-return]

    seen = asyncio.run(main())
    assert (seen["user_id"], seen["user"]) == ("u-aio", ("u-aio", "t-aio", seen["pid"]))
    assert seen["pid"] != os.getpid()
