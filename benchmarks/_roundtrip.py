"""The method shared by the loopback round-trip benchmarks (bench_grpc.py, bench_http.py).

A goal of a few percent is smaller than what separates two identical setups on a small
machine: two servers built alike differ by up to 5% for as long as they live (connections to
one server do not differ), and a machine drifts by as much over a minute. So the figure is
built to cancel both, and the run prints how well it did:

- every round starts a fresh server process that hosts several servers of every
  configuration, each on its own port, built in an order that changes from round to round
  (one process: they share its interpreter, memory and scheduling; only one call is in flight
  at a time, so they never compete);
- the client has one connection per server; the configurations take turns in short blocks,
  in an order shuffled for every turn (what ran just before affects a block), and each
  block's calls rotate over its configuration's servers. Blocks, not single calls: taking
  turns call by call would leave the code only one configuration runs (ours) colder than
  the code all but one run (OpenTelemetry's), which is not how a service runs it;
- ``baseline-b`` is a second, identical baseline: its ratio to ``baseline`` is the noise
  floor of the run, printed beside the figure that matters;
- the key figure is the median, over rounds, of each round's p50 ratio.

``measure`` hosts every configuration's servers in one process and switches the client
between configurations block by block. ``measure_apart`` (bench_overhead.py) runs each
configuration in processes of its own instead, a server process and a client process per
configuration and round, as separate services run: nothing is switched between blocks, and
code that only one configuration runs is not cooled by the others' blocks in a shared
process.

No timed assertion anywhere: this prints figures.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import random
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

# The default configurations; any set passed instead needs baseline, baseline-b and ours.
CONFIGS = ("plain", "baseline", "baseline-b", "ours")

Build = Callable[[str], tuple[int, Callable[[], None]]]  # config -> (port, close)
Connect = Callable[[str, int], tuple[Callable[[], Any], Callable[[], None]]]  # -> (call, close)
# config -> the calling process set up as that configuration's client (its tracer provider,
# instrumentors, textmap and baggage), run once in a client process of its own; then
# connect(config, port) as above
Setup = Callable[[str], None]


@dataclass
class Settings:
    rounds: int
    calls: int  # calls per configuration per round
    warm: int  # calls per connection before measuring
    block: int = 50  # calls of one configuration in a row
    servers: int = 3  # servers (one connection each) per configuration


@dataclass
class Results:
    configs: tuple[str, ...] = CONFIGS
    samples: dict[str, list[float]] = field(default_factory=dict)
    # per round: p50 of a configuration / p50 of baseline
    ratios: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.configs:
            self.samples.setdefault(name, [])
            self.ratios.setdefault(name, [])

    def add_round(self, this_round: dict[str, list[float]]) -> None:
        """One round's timings (us) per configuration, and their p50s' ratios to b's."""
        base = statistics.median(this_round["baseline"])
        for name, values in this_round.items():
            self.samples[name].extend(values)
            self.ratios[name].append(statistics.median(values) / base)


def _host(build: Build, order: list[str], ports: Any, stop: Any) -> None:
    closers = []
    found: dict[str, list[int]] = {}
    for name in order:
        port, close = build(name)
        found.setdefault(name, []).append(port)
        closers.append(close)
    ports.put(found)
    stop.wait(600)  # bounded: the parent sets it; a lost parent ends it after ten minutes
    for close in closers:
        close()


@contextmanager
def _server_process(build: Build, order: list[str]) -> Iterator[dict[str, list[int]]]:
    context = multiprocessing.get_context("spawn")
    ports, stop = context.Queue(), context.Event()
    process = context.Process(target=_host, args=(build, order, ports, stop), daemon=True)
    process.start()
    try:
        yield ports.get(timeout=120)
    finally:
        stop.set()
        process.join(10)


def measure(
    build: Build,
    connect: Connect,
    settings: Settings,
    before: Callable[[str], None],
    configs: tuple[str, ...] = CONFIGS,
) -> Results:
    """Run the rounds; ``before(name)`` runs before each block of ``name`` (untimed)."""
    results = Results(configs)
    shuffle = random.Random(20261125)  # fixed seed: the same orders on every run
    for _ in range(settings.rounds):
        order = [name for name in configs for _ in range(settings.servers)]
        shuffle.shuffle(order)
        with _server_process(build, order) as ports:
            calls: dict[str, list[Callable[[], Any]]] = {name: [] for name in configs}
            closers = []
            for name in order:
                call, close = connect(name, ports[name][len(calls[name])])
                calls[name].append(call)
                closers.append(close)
            try:
                this_round = _one_round(calls, shuffle, settings, before)
            finally:
                for close in closers:
                    close()
        results.add_round(this_round)
    return results


def measure_apart(
    build: Build,
    setup: Setup,
    connect: Connect,
    settings: Settings,
    configs: tuple[str, ...] = CONFIGS,
) -> Results:
    """``measure``, with every configuration in processes of its own, as separate services
    are: each round, a server process and a client process per configuration. The client
    process is set up once as its configuration's client (``setup``), so nothing is switched
    between blocks and a configuration's code is not cooled by the others' in a shared
    process. Calls still take turns in shuffled blocks, one process calling at a time."""
    results = Results(configs)
    shuffle = random.Random(20261125)
    for _ in range(settings.rounds):
        order = list(configs)
        shuffle.shuffle(order)
        with contextlib.ExitStack() as stack:
            clients = {}
            for name in order:
                ports = stack.enter_context(_server_process(build, [name] * settings.servers))
                clients[name] = stack.enter_context(
                    _client_process(setup, connect, name, ports[name], settings.warm)
                )
            this_round = _one_round_apart(clients, shuffle, settings)
        results.add_round(this_round)
    return results


def _one_round_apart(
    clients: dict[str, Any], shuffle: random.Random, settings: Settings
) -> dict[str, list[float]]:
    this_round: dict[str, list[float]] = {name: [] for name in clients}
    order = list(clients)
    for _ in range(settings.calls // settings.block):
        shuffle.shuffle(order)
        for name in order:
            clients[name].send(settings.block)
            this_round[name].extend(clients[name].recv())
    return this_round


def _calling(
    setup: Setup, connect: Connect, name: str, ports: list[int], warm: int, pipe: Any
) -> None:
    """A configuration's client process: set up, connected, warmed; then a block of calls
    (rotating over the servers) for every count it is sent, until it is sent 0."""
    setup(name)
    calls, closers = [], []
    for port in ports:
        call, close = connect(name, port)
        calls.append(call)
        closers.append(close)
    for call in calls:
        for _ in range(warm):
            call()
    pipe.send(True)
    while pipe.poll(600) and (count := pipe.recv()):  # bounded: a lost parent ends it
        pipe.send(timed_block(calls, count))
    for close in closers:
        close()


@contextmanager
def _client_process(
    setup: Setup, connect: Connect, name: str, ports: list[int], warm: int
) -> Iterator[Any]:
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(
        target=_calling, args=(setup, connect, name, ports, warm, theirs), daemon=True
    )
    process.start()
    try:
        if not ours.poll(300):
            raise RuntimeError(f"the {name} client process did not start")
        ours.recv()
        yield ours
    finally:
        ours.send(0)
        process.join(10)


def _one_round(
    calls: dict[str, list[Callable[[], Any]]],
    shuffle: random.Random,
    settings: Settings,
    before: Callable[[str], None],
) -> dict[str, list[float]]:
    for name, each in calls.items():
        before(name)
        for call in each:
            for _ in range(settings.warm):
                call()
    this_round: dict[str, list[float]] = {name: [] for name in calls}
    order = list(calls)
    for _ in range(settings.calls // settings.block):
        shuffle.shuffle(order)  # what ran just before affects a block: no fixed neighbours
        for name in order:
            before(name)
            this_round[name].extend(timed_block(calls[name], settings.block))
    return this_round


def timed_block(calls: list[Callable[[], Any]], count: int) -> list[float]:
    """``count`` calls, rotating over ``calls`` (one per server), each timed (us)."""
    timings: list[float] = []
    record, clock = timings.append, time.perf_counter_ns
    for step in range(count):
        call = calls[step % len(calls)]
        start = clock()
        call()
        record((clock() - start) / 1000)
    return timings


def rounds_from(argv: list[str]) -> int:
    """``--quick``: 4 rounds; ``--rounds N``: N (the median's spread shrinks as their root);
    otherwise 10."""
    if "--rounds" in argv:
        return max(1, int(argv[argv.index("--rounds") + 1]))
    return 4 if "--quick" in argv else 10


def client_setup(argv: list[str]) -> tuple[Settings, Any]:
    """The client process's common start: the run's settings (see ``rounds_from``) and an
    SDK tracer provider with ``IdentitySpanProcessor``, returned to be switched per block."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    import otel_identity as oi

    settings = Settings(rounds=rounds_from(argv), calls=1500, warm=100)
    provider = TracerProvider()
    processor = oi.IdentitySpanProcessor()
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    return settings, processor


def _percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def report(title: str, results: Results, settings: Settings, goal: float = 0.03) -> None:
    print(
        f"{title}: {settings.rounds} rounds x {settings.calls} calls per configuration, "
        f"over {settings.servers} servers each (us)"
    )
    print(f"{'configuration':<14}{'p50':>9}{'p99':>9}   median per-round p50 ratio to baseline")
    for name in results.configs:
        values = sorted(results.samples[name])
        ratios = results.ratios[name]
        median = statistics.median(ratios)
        spread = f"rounds {min(ratios):.3f}..{max(ratios):.3f}" if name != "baseline" else ""
        print(
            f"{name:<14}{statistics.median(values):>9.1f}{_percentile(values, 0.99):>9.1f}"
            f"   {median:.3f} ({median - 1:+.1%}) {spread}"
        )
    ours = statistics.median(results.ratios["ours"])
    floor = abs(statistics.median(results.ratios["baseline-b"]) - 1)
    verdict = "met" if ours <= 1 + goal else "NOT met"
    print(
        f"ours / baseline p50: {ours - 1:+.1%} (noise floor of this run: baseline-b differs by "
        f"{floor:.1%}); goal <= {goal:.0%}: {verdict}"
    )
