"""gRPC unary round trips on loopback: OpenTelemetry-instrumented baseline against the same
plus otel-identity, measured in one run, interleaved.

    python benchmarks/bench_grpc.py [--quick]

baseline = GrpcInstrumentorServer + GrpcInstrumentorClient (opentelemetry-instrumentation-grpc),
           SDK tracer providers on both sides, two baggage members (user.id, tenant.id) on
           every call: plain OpenTelemetry already carries the identity, so only our added
           work differs
ours     = the same plus GrpcIdentityInstrumentor (client egress check, server hop extract)
           and IdentitySpanProcessor on both sides
plain    = grpc without any instrumentation, for scale

The servers run in other processes, as a service does, not in the client's: sharing one
interpreter lock, client and server would wait for each other and every microsecond either
side adds would count several times. Each process hosts its configuration's server (the
baseline process also the plain one), with its own tracer provider. Two servers built alike
still differ by a few percent on this kind of machine, more than the overhead measured, so
every round starts fresh server processes, calls each configuration in turn (the order
rotates), and the key figure is the median of the per-round p50 ratios. Each call is one
blocking unary round trip; no timed assertion anywhere.
"""

from __future__ import annotations

import importlib
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import ExitStack, contextmanager
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from otel_identity_grpc import GrpcIdentityInstrumentor

import otel_identity as oi

METHOD = "/bench.Echo/Unary"
# opentelemetry-instrumentation-grpc is untyped; reach it through one Any-typed name.
otel_grpc: Any = importlib.import_module("opentelemetry.instrumentation.grpc")


def _echo(request: bytes, context: Any) -> bytes:
    return request


def _start_server() -> tuple[grpc.Server, int]:
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Unary": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def _serve(config: str, ports: Any, stop: Any) -> None:
    """A server process: ``baseline`` (plus the plain server) or ``ours``."""
    provider = TracerProvider()
    if config == "ours":
        provider.add_span_processor(oi.IdentitySpanProcessor())
    trace.set_tracer_provider(provider)
    found: dict[str, int] = {}
    servers = []
    if config == "baseline":
        server, found["plain"] = _start_server()  # built before any instrumentation
        servers.append(server)
    otel_grpc.GrpcInstrumentorServer().instrument()
    if config == "ours":
        GrpcIdentityInstrumentor().instrument()
    server, found[config] = _start_server()
    servers.append(server)
    ports.put(found)
    stop.wait(600)  # bounded: the parent sets it; a lost parent ends it after ten minutes
    for server in servers:
        server.stop(None).wait(5)


@contextmanager
def _servers() -> Iterator[dict[str, str]]:
    """Fresh server processes for one round: their targets by configuration."""
    context = multiprocessing.get_context("spawn")
    ports, stop = context.Queue(), context.Event()
    processes = [
        context.Process(target=_serve, args=(config, ports, stop), daemon=True)
        for config in ("baseline", "ours")
    ]
    for process in processes:
        process.start()
    try:
        targets: dict[str, str] = {}
        for _ in processes:
            for name, port in ports.get(timeout=120).items():
                targets[name] = f"127.0.0.1:{port}"
        yield targets
    finally:
        stop.set()
        for process in processes:
            process.join(10)


def _percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main() -> None:
    quick = "--quick" in sys.argv
    rounds, blocks, block, warm = (4, 10, 100, 200) if quick else (10, 20, 150, 300)

    provider = TracerProvider()
    identity_processor = oi.IdentitySpanProcessor()
    provider.add_span_processor(identity_processor)
    trace.set_tracer_provider(provider)
    client_identity = GrpcIdentityInstrumentor()
    otel_client = otel_grpc.GrpcInstrumentorClient()
    otel_client.instrument()
    payload = b"x" * 64
    configs = ("baseline", "ours", "plain")
    samples: dict[str, list[float]] = {name: [] for name in configs}
    per_round: list[float] = []  # ours p50 / baseline p50, one per round

    def run(stub: Callable[..., Any], name: str, count: int, record: Any) -> None:
        identity_processor.enabled = name == "ours"
        for _ in range(count):
            start = time.perf_counter_ns()
            stub(payload, timeout=10)
            if record is not None:
                record((time.perf_counter_ns() - start) / 1000)

    with oi.use_identity(user_id="u-42", tenant_id="acme"):
        for index in range(rounds):
            with _servers() as targets, ExitStack() as stack:
                # Channels keep the interceptors that were on when they were built.
                stubs: dict[str, Callable[..., Any]] = {}
                otel_client.uninstrument()
                plain = stack.enter_context(grpc.insecure_channel(targets["plain"]))
                otel_client.instrument()
                baseline = stack.enter_context(grpc.insecure_channel(targets["baseline"]))
                client_identity.instrument()
                ours = stack.enter_context(grpc.insecure_channel(targets["ours"]))
                client_identity.uninstrument()
                for name, channel in (("plain", plain), ("baseline", baseline), ("ours", ours)):
                    stubs[name] = channel.unary_unary(METHOD)
                this_round: dict[str, list[float]] = {name: [] for name in configs}
                for name in configs:
                    run(stubs[name], name, warm, None)
                for step in range(blocks):
                    shift = (index + step) % len(configs)  # each goes first in turn
                    for name in configs[shift:] + configs[:shift]:
                        run(stubs[name], name, block, this_round[name].append)
            for name, values in this_round.items():
                samples[name].extend(values)
            per_round.append(
                statistics.median(this_round["ours"]) / statistics.median(this_round["baseline"])
            )

    stats = {}
    for name, values in samples.items():
        values.sort()
        stats[name] = (statistics.median(values), _percentile(values, 0.99))
    print(
        f"gRPC unary round trip on loopback, server in another process, {rounds} rounds x "
        f"{blocks * block} calls per configuration (us)"
    )
    print(f"{'configuration':<14}{'p50':>9}{'p99':>9}")
    for name in ("plain", "baseline", "ours"):
        p50, p99 = stats[name]
        print(f"{name:<14}{p50:>9.1f}{p99:>9.1f}")
    (b50, b99), (o50, o99) = stats["baseline"], stats["ours"]
    paired = statistics.median(per_round)
    print(
        f"ours / baseline: p50 {o50 / b50:.3f} ({(o50 / b50 - 1) * 100:+.1f}%), "
        f"p99 {o99 / b99:.3f} ({(o99 / b99 - 1) * 100:+.1f}%)"
    )
    print(
        f"median of per-round p50 ratios {paired:.3f} ({(paired - 1) * 100:+.1f}%), "
        f"rounds: {', '.join(f'{r:.3f}' for r in per_round)}"
    )
    print(f"goal p50 overhead <= 3%: {'met' if paired <= 1.03 else 'NOT met'} (paired figure)")


if __name__ == "__main__":
    main()
