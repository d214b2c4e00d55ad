"""gRPC unary round trips on loopback: OpenTelemetry-instrumented baseline against the same
plus otel-identity, measured in one run, interleaved.

    python benchmarks/bench_grpc.py [--quick]

baseline = GrpcInstrumentorServer + GrpcInstrumentorClient (opentelemetry-instrumentation-grpc),
           an SDK tracer provider, two baggage members (user.id, tenant.id) on every call
ours     = the same plus GrpcIdentityInstrumentor (client egress check and inject, server hop
           extract) and IdentitySpanProcessor
plain    = grpc without any instrumentation, for scale
ours, interceptors only = ours with IdentitySpanProcessor switched off, to split the cost

The configurations run round-robin in small blocks, so drift (CPU frequency, other load) hits
them alike. Each call is one blocking unary round trip; figures are per call.
"""

from __future__ import annotations

import importlib
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


@contextmanager
def _server() -> Iterator[str]:
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Unary": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    pool = futures.ThreadPoolExecutor(max_workers=4)
    server = grpc.server(pool, handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None).wait(5)
        pool.shutdown(wait=False)


def _percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main() -> None:
    quick = "--quick" in sys.argv
    rounds, block = (40, 50) if quick else (250, 50)

    provider = TracerProvider()
    identity_processor = oi.IdentitySpanProcessor()
    provider.add_span_processor(identity_processor)
    trace.set_tracer_provider(provider)

    with ExitStack() as stack:
        # Servers and channels keep the interceptors of the instrumentors active when they
        # were created: each configuration is built after its instrumentors are on.
        plain = stack.enter_context(grpc.insecure_channel(stack.enter_context(_server())))
        otel_grpc.GrpcInstrumentorServer().instrument()
        otel_grpc.GrpcInstrumentorClient().instrument()
        base = stack.enter_context(grpc.insecure_channel(stack.enter_context(_server())))
        GrpcIdentityInstrumentor().instrument()
        ours = stack.enter_context(grpc.insecure_channel(stack.enter_context(_server())))
        calls: dict[str, tuple[Callable[..., Any], bool]] = {
            "plain": (plain.unary_unary(METHOD), False),
            "baseline": (base.unary_unary(METHOD), False),
            "ours": (ours.unary_unary(METHOD), True),
            "ours, interceptors only": (ours.unary_unary(METHOD), False),
        }
        samples: dict[str, list[float]] = {name: [] for name in calls}
        payload = b"x" * 64
        with oi.use_identity(user_id="u-42", tenant_id="acme"):
            for stub, identity_on in calls.values():  # warm up connections and caches
                identity_processor.enabled = identity_on
                for _ in range(300):
                    stub(payload, timeout=10)
            for _ in range(rounds):
                for name, (stub, identity_on) in calls.items():
                    identity_processor.enabled = identity_on
                    record = samples[name].append
                    for _ in range(block):
                        start = time.perf_counter_ns()
                        stub(payload, timeout=10)
                        record((time.perf_counter_ns() - start) / 1000)

    stats = {}
    for name, values in samples.items():
        values.sort()
        stats[name] = (statistics.median(values), _percentile(values, 0.99))
    print(f"gRPC unary round trip on loopback, {rounds * block} calls per configuration (us)")
    print(f"{'configuration':<26}{'p50':>10}{'p99':>10}{'p50 vs baseline':>18}")
    for name, (p50, p99) in stats.items():
        delta = p50 - stats["baseline"][0]
        print(f"{name:<26}{p50:>10.1f}{p99:>10.1f}{delta:>+16.1f}us")
    (b50, b99), (o50, o99) = stats["baseline"], stats["ours"]
    print(
        f"ours / baseline: p50 {o50 / b50:.3f} ({(o50 / b50 - 1) * 100:+.1f}%), "
        f"p99 {o99 / b99:.3f} ({(o99 / b99 - 1) * 100:+.1f}%)"
    )
    print(f"goal p50 overhead <= 3%: {'met' if o50 / b50 <= 1.03 else 'NOT met'}")


if __name__ == "__main__":
    main()
