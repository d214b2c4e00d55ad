"""The work otel-identity adds to a round trip, counted: Python calls and bytecodes.

    python benchmarks/bench_work.py [--identity-baggage]

The latency benchmarks (bench_grpc.py, bench_http.py) measure the goal, but on a shared
two-core machine their figure moves by a point or two from run to run: more than a change to
the hot path moves it. Counts do not move. This runs the same configurations as those two
(``baseline``: OpenTelemetry-instrumented; ``ours``: the same plus otel-identity), with client
and server in one process, and counts what the interpreter executes on every thread during a
fixed number of round trips, through ``sys.settrace`` (opcode events). It prints the counts per
round trip, what ``ours`` adds, and what bench_floor.py's ``floor`` adds (the least a hop of
this shape can do). Tracing makes the run slow; the counts are exact.

What a call or a bytecode costs in a real round trip is not counted here: on a loopback round
trip, code runs cold (see the README's Performance section).

``--identity-baggage``: ``ours`` runs with otel-identity's baggage step in the global textmap,
as ``IdentityInstrumentor`` leaves it in a deployed service (the other configurations keep
OpenTelemetry's default textmap). Without it, every configuration has OpenTelemetry's.
"""

from __future__ import annotations

import collections
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import _roundtrip
import bench_floor
import bench_grpc
import bench_http
from opentelemetry import propagate, trace
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from otel_identity_grpc import GrpcIdentityInstrumentor
from otel_identity_http import HttpClientIdentityInstrumentor

import otel_identity as oi

ROUND_TRIPS = 200
CONFIGS = ("baseline", "ours", "floor")
WARM = 200
_REPO = Path(__file__).resolve().parent.parent
# Source of otel-identity itself: the core and the instrumentation packages.
_OURS = (str(_REPO / "otel_identity"), str(_REPO / "instrumentations"))


class _Counter:
    """Counts calls and bytecodes on every thread while ``active``."""

    def __init__(self) -> None:
        self.active: collections.Counter[str] | None = None

    def trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        counts = self.active
        if counts is None:
            return None
        whose = "ours" if frame.f_code.co_filename.startswith(_OURS) else "rest"
        counts[f"{whose} calls"] += 1
        frame.f_trace_opcodes = True
        key = f"{whose} bytecodes"

        def step(frame: FrameType, event: str, arg: Any) -> Any:
            if event == "opcode":
                counts[key] += 1
            return step

        return step

    def count(self, call: Callable[[], Any]) -> collections.Counter[str]:
        for _ in range(WARM):
            call()
        counts: collections.Counter[str] = collections.Counter()
        self.active = counts
        try:
            for _ in range(ROUND_TRIPS):
                call()
        finally:
            self.active = None
        return counts


_Switch = Callable[[str], None]  # turns a configuration's client-side processor on


def _grpc(counter: _Counter, switch: _Switch) -> dict[str, Any]:
    bench_grpc.otel_grpc.GrpcInstrumentorClient().instrument()
    servers = {name: bench_floor.build(name) for name in CONFIGS}
    GrpcIdentityInstrumentor().instrument()  # channels; the servers are built as configured
    results = {}
    for name, (port, _close) in servers.items():
        switch(name)
        call, close = bench_floor.connect(name, port)
        results[name] = counter.count(call)
        close()
    for _port, close in servers.values():
        close()
    GrpcIdentityInstrumentor().uninstrument()
    bench_grpc.otel_grpc.GrpcInstrumentorClient().uninstrument()
    return results


def _http(counter: _Counter, switch: _Switch) -> dict[str, Any]:
    bench_http.RequestsInstrumentor().instrument()
    client = HttpClientIdentityInstrumentor()
    results = {}
    for name in CONFIGS:
        switch(name)
        if name == "ours":
            client.instrument()
        port, close_server = bench_floor.build_http(name)
        call, close = bench_floor.connect_http(name, port)
        results[name] = counter.count(call)
        close()
        close_server()
        if name == "ours":
            client.uninstrument()
    bench_http.RequestsInstrumentor().uninstrument()
    return results


def main() -> None:
    _settings, processor = _roundtrip.client_setup(sys.argv)
    floor_processor = bench_floor.FloorProcessor()
    trace.get_tracer_provider().add_span_processor(floor_processor)  # type: ignore[attr-defined]

    default_textmap = propagate.get_global_textmap()
    identity_textmap = CompositePropagator(
        [TraceContextTextMapPropagator(), oi.IdentityBaggagePropagator()]
    )
    identity_baggage = "--identity-baggage" in sys.argv

    def switch(name: str) -> None:
        processor.enabled = name == "ours"
        floor_processor.enabled = name == "floor"
        ours_step = identity_baggage and name == "ours"
        propagate.set_global_textmap(identity_textmap if ours_step else default_textmap)

    oi.configure(inbound="trust")
    counter = _Counter()
    threading.settrace(counter.trace)  # server threads start later, traced from their start
    sys.settrace(counter.trace)
    with oi.use_identity(user_id="u-42", tenant_id="acme"):
        runs = {
            "gRPC unary": _grpc(counter, switch),
            "HTTP requests -> werkzeug": _http(counter, switch),
        }
    sys.settrace(None)
    threading.settrace(None)  # type: ignore[arg-type]
    step = "otel-identity's" if identity_baggage else "OpenTelemetry's"
    print(f"Work per round trip, counted over {ROUND_TRIPS} round trips (all threads)")
    print(f"baggage step of 'ours': {step}")
    print(f"{'round trip':<27}{'':>9}{'':>6}{'baseline':>12}{'with it':>12}{'added':>12}")
    for title, results in runs.items():
        base = results["baseline"]
        for config in ("ours", "floor"):
            for unit in ("calls", "bytecodes"):
                before = (base[f"ours {unit}"] + base[f"rest {unit}"]) / ROUND_TRIPS
                after = sum(results[config][f"{w} {unit}"] for w in ("ours", "rest")) / ROUND_TRIPS
                label = title if unit == "calls" and config == "ours" else ""
                print(
                    f"{label:<27}{unit:>9}{config:>6}{before:>12.0f}{after:>12.0f}"
                    f"{after - before:>+12.0f} ({(after - before) / before:+.1%})"
                )


if __name__ == "__main__":
    main()
