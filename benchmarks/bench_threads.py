"""A thread hop (submit + run + result on a 1-worker ThreadPoolExecutor), four ways, one run.

    .venv/bin/python benchmarks/bench_threads.py [--hops 20000] [--rounds 10] [--count]

The key figure is ``cpu``: the CPU time a hop costs, submit side and worker side together.
Tasks go in batches while the worker is held at a gate, so submitting and running never
contend for the GIL, and each side is timed with its own thread's CPU clock
(``time.thread_time``): the figure is what the hop costs, not how the two threads happened
to be scheduled, and other processes on a shared machine barely move it. The garbage
collector stays on, as in an application: what a hop allocates it also pays to collect.
``latency`` (submit, wait for the result, next) is printed for information: the worker's
wake-up dominates it and hides most CPU cost.

Phases: ``bare`` (no instrumentation), ``contrib threading``
(opentelemetry-instrumentation-threading), ``otel-identity`` (ThreadingIdentityInstrumentor:
capture at submit, then the task runs as a counted hop with its own current_user slot) and
``both``. Every phase runs under the same identity in baggage; the phases alternate round by
round and the median round counts, so drift of the machine hits all of them alike. Goal (issue
#3): what otel-identity adds over a bare hop is at most half of what the contrib
instrumentation adds.

``--count`` counts instead of timing, exactly (bench_work.py's ``Counter``): the Python
calls and bytecodes per hop of each instrumentation's own frames and what they call, cut where
they call back into the executor or the task. It is not the goal's measure: it leaves out
what each does in C (allocations, wrapt's proxies, contextvars), which is most of a thread
hop's cost; it tells which Python steps a hop runs, to follow a change to them.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from opentelemetry import context as otel_context
from opentelemetry.instrumentation import threading as otel_threading
from opentelemetry.instrumentation.threading import ThreadingInstrumentor
from otel_identity_threading import ThreadingIdentityInstrumentor

import otel_identity as oi

_BATCH = 250


def _noop() -> None:
    return None


def _cpu_ns(pool: ThreadPoolExecutor, hops: int) -> float:
    """CPU ns per hop: submit side (this thread) plus run side (the worker), in batches."""
    total = 0.0
    for _ in range(max(1, hops // _BATCH)):
        gate = threading.Event()
        marks: list[float] = []

        def opened(gate: threading.Event = gate, marks: list[float] = marks) -> None:
            gate.wait()
            marks.append(time.thread_time())

        def last(marks: list[float] = marks) -> None:
            marks.append(time.thread_time())

        pool.submit(opened)
        start = time.thread_time()
        futures: list[Future[None]] = [pool.submit(_noop) for _ in range(_BATCH - 1)]
        futures.append(pool.submit(last))
        submitted = time.thread_time()
        gate.set()
        futures[-1].result()
        results = time.thread_time()
        for future in futures:
            future.result()
        total += (submitted - start) + (marks[1] - marks[0]) + (time.thread_time() - results)
    return total / (max(1, hops // _BATCH) * _BATCH) * 1e9


def _latency_ns(pool: ThreadPoolExecutor, hops: int) -> float:
    submit = pool.submit
    start = time.perf_counter()
    for _ in range(hops):
        submit(_noop).result()
    return (time.perf_counter() - start) / hops * 1e9


MODES: dict[str, Callable[[ThreadPoolExecutor, int], float]] = {
    "cpu": _cpu_ns,
    "latency": _latency_ns,
}


def _both_on() -> None:
    ThreadingInstrumentor().instrument()
    ThreadingIdentityInstrumentor().instrument()


def _both_off() -> None:
    ThreadingIdentityInstrumentor().uninstrument()
    ThreadingInstrumentor().uninstrument()


PHASES: dict[str, tuple[Callable[[], None], Callable[[], None]]] = {
    "bare": (lambda: None, lambda: None),
    "contrib threading": (
        lambda: ThreadingInstrumentor().instrument(),
        lambda: ThreadingInstrumentor().uninstrument(),
    ),
    "otel-identity": (
        lambda: ThreadingIdentityInstrumentor().instrument(),
        lambda: ThreadingIdentityInstrumentor().uninstrument(),
    ),
    # For information: both on, as with opentelemetry-instrument and both installed.
    "both": (_both_on, _both_off),
}


def counted(hops: int = 200) -> dict[str, Counter[str]]:
    """Calls and bytecodes per hop that each instrumentation's own code executes, in all and
    by function (see the module's docstring)."""
    import concurrent.futures
    import sys

    import bench_work

    host = (
        bench_work._folder(concurrent.futures),
        bench_work._folder(sys.modules[__name__]),
        str(threading.__file__),
    )
    measured = {
        "contrib threading": (bench_work._folder(otel_threading),),
        "otel-identity": bench_work.MEASURED,
    }
    per_hop = {}
    token = otel_context.attach(oi.set_identity(user_id="u-42", tenant_id="acme"))
    try:
        for name, roots in measured.items():
            on, off = PHASES[name]
            on()
            # the worker starts under the trace hook: both sides of the hop are counted
            with (
                bench_work.Counter(roots, host).tracing() as counter,
                ThreadPoolExecutor(1) as pool,
            ):
                try:
                    _latency_ns(pool, 100)
                    per_hop[name] = counter.count(lambda: pool.submit(_noop).result(), hops)
                finally:
                    off()
    finally:
        otel_context.detach(token)
    return per_hop


def _print_counted() -> None:
    for name, hop in counted().items():
        print(
            f"{name:<20}{hop['caused calls']:>5.0f} calls {hop['caused bytecodes']:>6.0f} bytecodes"
        )
        for spot, n in sorted(hop.items(), key=lambda item: -item[1]):
            if spot.startswith("in "):
                print(f"{'':<20}{n:>24.0f}  {spot[3:]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hops", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--count", action="store_true", help="count bytecodes, exactly")
    args = parser.parse_args()
    if args.count:
        _print_counted()
        return

    samples: dict[tuple[str, str], list[float]] = {
        (mode, name): [] for mode in MODES for name in PHASES
    }
    token = otel_context.attach(oi.set_identity(user_id="u-42", tenant_id="acme"))
    try:
        with ThreadPoolExecutor(1) as pool:
            _latency_ns(pool, 2_000)  # warm the worker, the caches and the allocator
            for _ in range(args.rounds):
                for name, (on, off) in PHASES.items():
                    on()
                    try:
                        for mode, measure in MODES.items():
                            measure(pool, 1_000)
                            hops = args.hops if mode == "cpu" else args.hops // 4
                            samples[(mode, name)].append(measure(pool, hops))
                    finally:
                        off()
    finally:
        otel_context.detach(token)

    print(f"thread hop, 1 worker, {args.hops} hops x {args.rounds} rounds (median round)")
    for mode in MODES:
        per_hop = {name: statistics.median(samples[(mode, name)]) for name in PHASES}
        bare = per_hop["bare"]
        print(f"\n[{mode}]")
        print(f"{'phase':<20}{'ns/hop':>10}{'added ns':>10}{'x bare':>9}")
        for name, value in per_hop.items():
            print(f"{name:<20}{value:>10.0f}{value - bare:>10.0f}{value / bare:>9.3f}")
        contrib_added = per_hop["contrib threading"] - bare
        ours_added = per_hop["otel-identity"] - bare
        if contrib_added > 0.02 * bare:
            ratio = f"{ours_added / contrib_added:.2f}"
        else:
            ratio = "n/a (contrib's addition is below the noise)"
        goal = " (goal <= 0.5)" if mode == "cpu" else ""
        print(f"otel-identity added / contrib added = {ratio}{goal}")


if __name__ == "__main__":
    main()
