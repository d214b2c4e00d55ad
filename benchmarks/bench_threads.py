"""A thread hop (submit + result on a 1-worker ThreadPoolExecutor), four ways, in one run.

    .venv/bin/python benchmarks/bench_threads.py [--hops 10000] [--rounds 12]

Two shapes of the same hop: ``latency`` (submit, wait for the result, next), where the
worker's wake-up dominates and hides most CPU cost, and ``pipelined`` (submit a batch, then
collect the results), where the GIL serialises both sides so the figure is the CPU the hop
costs, send side and receive side together. Times are process CPU time (both threads), not
wall time: other processes on a shared machine then barely move the figures.

Phases: ``bare`` (no instrumentation), ``contrib threading``
(opentelemetry-instrumentation-threading), ``otel-identity`` (ThreadingIdentityInstrumentor:
capture at submit, then receive and attach in the worker, so the hop is counted and gets its
own current_user slot) and ``both``. Every phase runs under the same identity in baggage; the
phases alternate round by round and the median round counts, so drift of the machine hits
all of them alike. The key figure is what otel-identity adds over a bare hop divided by what
the contrib instrumentation adds (goal: <= 0.5).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from opentelemetry import context as otel_context
from opentelemetry.instrumentation.threading import ThreadingInstrumentor
from otel_identity_threading import ThreadingIdentityInstrumentor

import otel_identity as oi


def _noop() -> None:
    return None


def _latency_us(pool: ThreadPoolExecutor, hops: int) -> float:
    submit = pool.submit
    gc.disable()
    try:
        start = time.process_time()
        for _ in range(hops):
            submit(_noop).result()
        elapsed = time.process_time() - start
    finally:
        gc.enable()
    return elapsed / hops * 1e6


def _pipelined_us(pool: ThreadPoolExecutor, hops: int) -> float:
    submit = pool.submit
    gc.disable()
    try:
        start = time.process_time()
        futures = [submit(_noop) for _ in range(hops)]
        for future in futures:
            future.result()
        elapsed = time.process_time() - start
    finally:
        gc.enable()
    return elapsed / hops * 1e6


MODES: dict[str, Callable[[ThreadPoolExecutor, int], float]] = {
    "latency": _latency_us,
    "pipelined": _pipelined_us,
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hops", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args()

    samples: dict[tuple[str, str], list[float]] = {
        (mode, name): [] for mode in MODES for name in PHASES
    }
    token = otel_context.attach(oi.set_identity(user_id="u-42", tenant_id="acme"))
    try:
        with ThreadPoolExecutor(1) as pool:
            _latency_us(pool, 2_000)  # warm the worker, the caches and the allocator
            for _ in range(args.rounds):
                for name, (on, off) in PHASES.items():
                    on()
                    try:
                        for mode, measure in MODES.items():
                            measure(pool, 500)
                            samples[(mode, name)].append(measure(pool, args.hops))
                    finally:
                        off()
    finally:
        otel_context.detach(token)

    print(f"thread hop, 1 worker, {args.hops} hops x {args.rounds} rounds (median round)")
    for mode in MODES:
        per_hop = {name: statistics.median(samples[(mode, name)]) for name in PHASES}
        bare = per_hop["bare"]
        print(f"\n[{mode}]")
        print(f"{'phase':<20}{'us/hop':>10}{'added us':>10}{'x bare':>9}")
        for name, value in per_hop.items():
            print(f"{name:<20}{value:>10.2f}{value - bare:>10.2f}{value / bare:>9.3f}")
        contrib_added = per_hop["contrib threading"] - bare
        ours_added = per_hop["otel-identity"] - bare
        if contrib_added > 0.05:
            ratio = f"{ours_added / contrib_added:.2f}"
        else:
            ratio = "n/a (contrib's addition is below the noise)"
        print(f"otel-identity added / contrib added = {ratio} (goal <= 0.5)")


if __name__ == "__main__":
    main()
