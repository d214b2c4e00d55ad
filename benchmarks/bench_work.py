"""The work otel-identity adds to a round trip, counted: Python calls and bytecodes.

    python benchmarks/bench_work.py [--where] [--otel-baggage] [--verify] [--round-trips N]

The latency benchmarks (bench_overhead.py, bench_grpc.py, bench_http.py) measure the goal, but
on a shared two-core machine their figure moves from run to run by more than a change to the
hot path moves it. Counts do not move. This runs the same configurations (``baseline``:
OpenTelemetry-instrumented, with OpenTelemetry's W3C baggage step; ``ours``: the same plus
otel-identity; ``floor``: bench_floor.py's yardstick) with client and server in one process,
and counts what the interpreter executes through ``sys.settrace`` (opcode events), two ways:

- **caused** (exact): the work of the measured code, that is otel-identity's frames and the
  frames they call, down to where they hand control back to the host (a call into the
  transport library, an OpenTelemetry instrumentation or the application: ``HOST``), plus in
  every configuration the frames of OpenTelemetry's W3C baggage step, which otel-identity's
  own step replaces in a deployed service. What ``ours`` adds is its caused work minus the
  baseline's. It does not depend on thread scheduling or timing, so it is the same on every
  run for a given set of installed versions: tests/test_work_budget.py holds it to the
  budget of issue #13.
- **all threads**: everything executed on every thread. It also sees what otel-identity
  changes in the host's own code, but moves by a few bytecodes between runs (the servers'
  timed poll loops and thread-pool hand-offs race with the client).

``ours`` runs with otel-identity's baggage step in the global textmap, as
``IdentityInstrumentor`` leaves it in a deployed service; ``--otel-baggage`` keeps
OpenTelemetry's step there too. ``--verify`` runs under ``inbound="verify"`` with a fixed
signing key (bench_overhead.py's): the client signs what it sends and the server verifies it;
by default the policy is ``trust``. Tracing makes the run slow. What a call or a bytecode costs in
a real round trip is not counted here (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import statistics
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
WARM = 200
CONFIGS = ("baseline", "ours", "floor")
# The one signing key of ``--verify`` (bench_overhead.py's): an HMAC key, kid ``bench``.
VERIFY_KEY = "bench:" + base64.b64encode(b"k" * 32).decode("ascii")


def _folder(module: Any, up: int = 0) -> str:
    """The folder holding ``module``'s source, or its ``up``-th parent, as a path prefix."""
    return str(Path(module.__file__).resolve().parents[up]) + "/"


# The measured code: otel-identity (core and instrumentation packages) and the baggage step.
MEASURED = (
    _folder(oi),
    _folder(sys.modules["otel_identity_grpc"], up=1),
    _folder(propagate, up=1) + "baggage/propagation/",
)
# Where the measured code hands control back: the transports, OpenTelemetry's
# instrumentations, the benchmark's applications.
HOST = (
    *(_folder(sys.modules[name]) for name in ("grpc", "requests", "urllib3", "werkzeug")),
    _folder(propagate, up=1) + "instrumentation/",
    str(Path(__file__).resolve().parent) + "/",
    *(str(sys.modules[name].__file__) for name in ("socketserver", "http.client", "http.server")),
)


class Counter:
    """Counts calls and bytecodes on every thread while ``active``: all of them, and those
    caused by the measured code (see the module's docstring)."""

    def __init__(self, measured: tuple[str, ...] = MEASURED, host: tuple[str, ...] = HOST) -> None:
        self.active: collections.Counter[str] | None = None
        self._measured, self._host = measured, host
        self._caused: dict[int, bool] = {}  # id of a live frame -> whether it is caused

    def _is_caused(self, frame: FrameType) -> bool:
        filename = frame.f_code.co_filename
        if filename.startswith(self._measured):
            return True
        if filename.startswith(self._host):
            return False
        return frame.f_back is not None and self._caused.get(id(frame.f_back), False)

    def trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        counts = self.active
        if counts is None:
            return None
        caused = self._is_caused(frame)
        self._caused[id(frame)] = caused
        counts["calls"] += 1
        counts["caused calls"] += caused
        frame.f_trace_opcodes = True
        code = frame.f_code
        name = getattr(code, "co_qualname", code.co_name)  # (3.10: co_name)
        where = f"in {Path(code.co_filename).stem}.{name}"
        keys = ("bytecodes", "caused bytecodes", where) if caused else ("bytecodes",)

        def step(frame: FrameType, event: str, arg: Any) -> Any:
            if event == "opcode":
                for key in keys:
                    counts[key] += 1
            elif event == "return":
                self._caused.pop(id(frame), None)
            return step

        return step

    def count(self, call: Callable[[], Any], round_trips: int) -> collections.Counter[str]:
        """Per round trip: the mean of every count, and ``typical caused bytecodes``, the
        caused bytecodes of most round trips (bookkeeping done once in many, such as folding
        the hop tables of ended threads, is in the mean only)."""
        counts: collections.Counter[str] = collections.Counter()
        each = []
        self.active = counts
        try:
            for _ in range(round_trips):
                before = counts["caused bytecodes"]
                call()
                each.append(counts["caused bytecodes"] - before)
        finally:
            self.active = None
        mean = collections.Counter({key: n / round_trips for key, n in counts.items()})
        mean["typical caused bytecodes"] = statistics.mode(each)
        return mean

    @contextmanager
    def tracing(self) -> Iterator[Counter]:
        """Traces every thread (server threads start later, traced from their start)."""
        threading.settrace(self.trace)
        sys.settrace(self.trace)
        try:
            yield self
        finally:
            sys.settrace(None)
            threading.settrace(None)  # type: ignore[arg-type]
            self._caused.clear()


@dataclass
class Run:
    """How to count: round trips counted after ``warm`` uncounted ones, each ``repeat`` times
    (the caused counts of the repeats must agree), and ``ours``'s baggage step."""

    round_trips: int = ROUND_TRIPS
    warm: int = WARM
    repeat: int = 1
    identity_baggage: bool = True
    verify: bool = False


Connection = tuple[Callable[[], Any], Callable[[], None]]  # (one round trip, close)


class _Configs:
    """Switches between the configurations: the client's span processors and the textmap."""

    def __init__(self, processor: Any, identity_baggage: bool) -> None:
        self._processor = processor
        self._floor = bench_floor.FloorProcessor()
        trace.get_tracer_provider().add_span_processor(self._floor)  # type: ignore[attr-defined]
        self._default = propagate.get_global_textmap()
        self._identity = CompositePropagator(
            [TraceContextTextMapPropagator(), oi.IdentityBaggagePropagator()]
        )
        self._identity_baggage = identity_baggage

    def switch(self, name: str) -> None:
        self._processor.enabled = name == "ours"
        self._floor.enabled = name == "floor"
        ours_step = self._identity_baggage and name == "ours"
        propagate.set_global_textmap(self._identity if ours_step else self._default)


def _count(counter: Counter, connection: Connection, run: Run) -> list[collections.Counter[str]]:
    call, close = connection
    try:
        for _ in range(run.warm):
            call()
        return [counter.count(call, run.round_trips) for _ in range(run.repeat)]
    finally:
        close()


def _grpc(counter: Counter, configs: _Configs, run: Run) -> dict[str, Any]:
    bench_grpc.otel_grpc.GrpcInstrumentorClient().instrument()
    # Servers first: the instrumentor below would add its interceptor to every server made
    # after it. It is for the channels; each server has what its configuration has.
    servers = {name: bench_floor.build(name) for name in CONFIGS}
    GrpcIdentityInstrumentor().instrument()
    try:
        results = {}
        for name, (port, _close) in servers.items():
            configs.switch(name)
            results[name] = _count(counter, bench_floor.connect(name, port), run)
        return results
    finally:
        for _port, close in servers.values():
            close()
        GrpcIdentityInstrumentor().uninstrument()
        bench_grpc.otel_grpc.GrpcInstrumentorClient().uninstrument()


def _http(counter: Counter, configs: _Configs, run: Run) -> dict[str, Any]:
    bench_http.RequestsInstrumentor().instrument()
    client = HttpClientIdentityInstrumentor()
    try:
        results = {}
        for name in CONFIGS:
            configs.switch(name)
            if name == "ours":
                client.instrument()
            port, close_server = bench_floor.build_http(name)
            _configure(run)()  # (bench_http's build configures the server for trust)
            try:
                results[name] = _count(counter, bench_floor.connect_http(name, port), run)
            finally:
                close_server()
                if name == "ours":
                    client.uninstrument()
        return results
    finally:
        bench_http.RequestsInstrumentor().uninstrument()


TRANSPORTS = {"gRPC unary": _grpc, "HTTP requests -> werkzeug": _http}


def _configure(run: Run) -> Callable[[], None]:
    """The run's settings (client and servers share them: one process)."""
    if run.verify:
        return lambda: oi.configure(inbound="verify", signing_keys=VERIFY_KEY)
    return lambda: oi.configure(inbound="trust")


def measure(run: Run) -> dict[str, dict[str, list[collections.Counter[str]]]]:
    """Per transport and configuration, the counts per round trip of each repeat. Sets up
    the tracer provider and the settings itself (in-process: for this script and the test)."""
    _settings, processor = _roundtrip.client_setup([])
    configs = _Configs(processor, run.identity_baggage)
    _configure(run)()
    try:
        with Counter().tracing() as counter, oi.use_identity(user_id="u-42", tenant_id="acme"):
            return {title: count(counter, configs, run) for title, count in TRANSPORTS.items()}
    finally:
        configs.switch("baseline")


def added(results: dict[str, list[collections.Counter[str]]], config: str, key: str) -> float:
    """What ``config`` adds to the baseline per round trip (first repeat)."""
    return results[config][0][key] - results["baseline"][0][key]


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--otel-baggage", action="store_true", help="keep OpenTelemetry's step")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    parser.add_argument("--round-trips", type=int, default=ROUND_TRIPS)
    parser.add_argument("--warm", type=int, default=WARM)
    parser.add_argument("--repeat", type=int, default=1, help="count this many times")
    parser.add_argument("--verify", action="store_true", help='inbound="verify", signed')
    parser.add_argument("--where", action="store_true", help="caused bytecodes by function")
    return parser.parse_args()


def main() -> None:
    arguments = _arguments()
    run = Run(
        round_trips=arguments.round_trips,
        warm=arguments.warm,
        repeat=arguments.repeat,
        identity_baggage=not arguments.otel_baggage,
        verify=arguments.verify,
    )
    runs = measure(run)
    if arguments.json:
        print(json.dumps(runs))
        return
    _print_counts(run, runs)
    if arguments.where:
        _print_where(runs)


def _print_where(runs: dict[str, dict[str, list[collections.Counter[str]]]]) -> None:
    """Where the caused bytecodes of ``ours`` and ``baseline`` go, function by function."""
    for title, results in runs.items():
        print(f"\n{title}: caused bytecodes per round trip by function (own frames only)")
        for config in ("baseline", "ours"):
            spots = {k: n for k, n in results[config][0].items() if k.startswith("in ")}
            for spot, n in sorted(spots.items(), key=lambda item: -item[1]):
                print(f"  {config:<9}{n:>7.0f}  {spot[3:]}")


def _print_counts(run: Run, runs: dict[str, dict[str, list[collections.Counter[str]]]]) -> None:
    step = "otel-identity's" if run.identity_baggage else "OpenTelemetry's"
    policy = "verify (signed)" if run.verify else "trust"
    print(f"Work per round trip, counted over {run.round_trips} round trips, inbound={policy}")
    print(f"(baggage step of 'ours': {step}; 'caused' is exact, 'all' moves a little)")
    print(f"{'round trip':<27}{'':>17}{'':>6}{'baseline':>11}{'with it':>11}{'added':>9}")
    for title, results in runs.items():
        for config in ("ours", "floor"):
            for key in ("caused calls", "caused bytecodes", "calls", "bytecodes"):
                before = results["baseline"][0][key]
                label = title if key == "caused calls" and config == "ours" else ""
                unit = key if key.startswith("caused") else f"all {key}"
                print(
                    f"{label:<27}{unit:>17}{config:>6}{before:>11.0f}"
                    f"{results[config][0][key]:>11.0f}{added(results, config, key):>+9.0f}"
                )


if __name__ == "__main__":
    main()
