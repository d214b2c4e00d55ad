"""Queue hops, publish + consume, with and without otel-identity, in one run.

    .venv/bin/python benchmarks/bench_queues.py [--messages 10000] [--celery 2000] [--rounds 5]

In-process (``queue.Queue`` with a consumer thread, and ``asyncio.Queue`` with a consumer
task), 10,000 messages per round:
  bare:          items put and got as they are (the hop loses identity: the bug);
  otel-context:  the sender's context captured at put and attached around each item by hand,
                 what a plain OpenTelemetry hand-off costs;
  otel-identity: ``IdentityQueue`` / ``AsyncIdentityQueue`` (context captured at put, the item
                 run as a counted ``queue.consume`` hop with its own current_user slot).
Times are process CPU time per message (producer and consumer together); the median round
counts and phases alternate round by round.

Celery through Redis (``redis://127.0.0.1:6379/14``), an in-process worker with 4 threads,
``--celery`` tasks per phase (2,000 by default, not 10,000, so the whole run stays under a
minute; Redis round trips dominate): wall time from the first ``delay()`` until the last task
has run, without and with ``CeleryIdentityInstrumentor``, 3 alternating rounds, median.
Every phase publishes under the same identity.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import queue
import statistics
import threading
import time
import uuid
from collections.abc import Callable

from opentelemetry import context as otel_context

import otel_identity as oi
from otel_identity._queues import AsyncIdentityQueue, IdentityQueue

_STOP = object()


def _cpu(run: Callable[[], None]) -> float:
    gc.collect()
    start = time.process_time()
    run()
    return time.process_time() - start


def _thread_bare(n: int) -> None:
    q: queue.Queue[object] = queue.Queue()

    def consume() -> None:
        while q.get() is not _STOP:
            pass

    worker = threading.Thread(target=consume)
    worker.start()
    for i in range(n):
        q.put(i)
    q.put(_STOP)
    worker.join()


def _thread_otel(n: int) -> None:
    q: queue.Queue[tuple[object, object]] = queue.Queue()

    def consume() -> None:
        while True:
            item, ctx = q.get()
            if item is _STOP:
                return
            token = otel_context.attach(ctx)  # type: ignore[arg-type]
            otel_context.detach(token)

    worker = threading.Thread(target=consume)
    worker.start()
    for i in range(n):
        q.put((i, otel_context.get_current()))
    q.put((_STOP, None))
    worker.join()


def _thread_identity(n: int) -> None:
    q: IdentityQueue[object] = IdentityQueue()

    def consume() -> None:
        while True:
            with q.get() as item:
                if item is _STOP:
                    return

    worker = threading.Thread(target=consume)
    worker.start()
    for i in range(n):
        q.put(i)
    q.put(_STOP)
    worker.join()


def _async_bare(n: int) -> None:
    async def main() -> None:
        q: asyncio.Queue[object] = asyncio.Queue()

        async def consume() -> None:
            while (await q.get()) is not _STOP:
                pass

        task = asyncio.create_task(consume())
        for i in range(n):
            q.put_nowait(i)
        q.put_nowait(_STOP)
        await task

    asyncio.run(main())


def _async_otel(n: int) -> None:
    async def main() -> None:
        q: asyncio.Queue[tuple[object, object]] = asyncio.Queue()

        async def consume() -> None:
            while True:
                item, ctx = await q.get()
                if item is _STOP:
                    return
                token = otel_context.attach(ctx)  # type: ignore[arg-type]
                otel_context.detach(token)

        task = asyncio.create_task(consume())
        for i in range(n):
            q.put_nowait((i, otel_context.get_current()))
        q.put_nowait((_STOP, None))
        await task

    asyncio.run(main())


def _async_identity(n: int) -> None:
    async def main() -> None:
        q: AsyncIdentityQueue[object] = AsyncIdentityQueue()

        async def consume() -> None:
            while True:
                with await q.get() as item:
                    if item is _STOP:
                        return

        task = asyncio.create_task(consume())
        for i in range(n):
            q.put_nowait(i)
        q.put_nowait(_STOP)
        await task

    asyncio.run(main())


def _in_process(messages: int, rounds: int) -> None:
    shapes = {
        "queue.Queue + thread": (_thread_bare, _thread_otel, _thread_identity),
        "asyncio.Queue + task": (_async_bare, _async_otel, _async_identity),
    }
    print(f"in-process queues: {messages:,} messages per round, median of {rounds} rounds")
    print(
        f"  {'shape':<22} {'bare':>9} {'otel-ctx':>9} {'identity':>9} {'id/bare':>8} {'id/otel':>8}"
    )
    with oi.use_identity(user_id="u-42", tenant_id="acme", roles=["reader"]):
        for shape, phases in shapes.items():
            results: list[list[float]] = [[], [], []]
            for _ in range(rounds):
                for index, phase in enumerate(phases):
                    results[index].append(_cpu(lambda p=phase: p(messages)) / messages * 1e6)
            bare, otel, ident = (statistics.median(r) for r in results)
            print(
                f"  {shape:<22} {bare:>7.2f}us {otel:>7.2f}us {ident:>7.2f}us "
                f"{ident / bare:>7.2f}x {ident / otel:>7.2f}x"
            )


def _celery(tasks: int, rounds: int) -> None:
    import socket

    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
    except OSError:
        print("celery/redis: skipped (no Redis on 127.0.0.1:6379)")
        return
    from celery import Celery
    from celery.contrib.testing.worker import start_worker
    from otel_identity_celery import CeleryIdentityInstrumentor

    broker = "redis://127.0.0.1:6379/14"
    app = Celery("bench_queues", broker=broker, backend=broker)
    app.conf.update(
        task_default_queue=f"bench-{uuid.uuid4().hex[:8]}",
        broker_connection_retry_on_startup=True,
        worker_prefetch_multiplier=16,
        task_ignore_result=True,
    )
    done = threading.Semaphore(0)
    seen: list[bool] = []

    @app.task(name="bench.touch")
    def touch() -> None:
        seen.append(oi.get_identity() is not None)
        done.release()

    def phase(count: int = tasks) -> float:
        seen.clear()
        start = time.perf_counter()
        for _ in range(count):
            touch.delay()
        for _ in range(count):
            if not done.acquire(timeout=30):
                raise RuntimeError("celery benchmark: tasks did not finish")
        return time.perf_counter() - start

    print(
        f"\ncelery/redis: {tasks:,} tasks per phase (delay + run, 4 threads), "
        f"wall time, median of {rounds} alternating rounds"
    )
    bare_runs: list[float] = []
    ident_runs: list[float] = []
    counts = {"bare": 0, "otel-identity": 0}
    with (
        oi.use_identity(user_id="u-42", tenant_id="acme"),
        start_worker(
            app, pool="threads", concurrency=4, perform_ping_check=False, shutdown_timeout=10
        ),
    ):
        phase(200)  # warm-up: connections, pools
        for _ in range(rounds):
            bare_runs.append(phase())
            counts["bare"] = sum(seen)
            CeleryIdentityInstrumentor().instrument()
            try:
                ident_runs.append(phase())
                counts["otel-identity"] = sum(seen)
            finally:
                CeleryIdentityInstrumentor().uninstrument()
    bare, ident = statistics.median(bare_runs), statistics.median(ident_runs)
    for name, took in (("bare", bare), ("otel-identity", ident)):
        per_task = took / tasks * 1e6
        print(
            f"  {name + ':':<15}{took:6.2f}s {per_task:7.0f}us/task  "
            f"tasks that saw the identity: {counts[name]}"
        )
    print(f"  ratio identity/bare: {ident / bare:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--celery", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    _in_process(args.messages, args.rounds)
    if args.celery:
        _celery(args.celery, max(1, min(args.rounds, 3)))


if __name__ == "__main__":
    main()
