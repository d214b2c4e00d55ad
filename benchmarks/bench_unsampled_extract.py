"""What one receiving gRPC hop's extract costs, with its server span sampled and dropped.

    python benchmarks/bench_unsampled_extract.py

``extract`` as the sync server interceptor calls it when OpenTelemetry's server interceptor
has already started the hop's span (issue #13: under a parent-based 1% sampler that span is a
``NonRecordingSpan``, and extract used to take its general path, reading the whole carrier
again). The last rows time the hop decided in OpenTelemetry's own pass: OpenTelemetry's
``propagate.extract`` with the hop announced (``otel_identity.instrumentation.announce``),
against the same extract alone (what OpenTelemetry's interceptor pays without otel-identity).
Microseconds per call, best of 5 timeit repeats; no assertion anywhere, this prints figures.
"""

from __future__ import annotations

import contextvars
import timeit
from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from otel_identity_grpc import _metadata

import otel_identity as oi
from otel_identity import instrumentation as oii
from otel_identity import names

ROUTE = "/bench.Echo/Unary"
BAGGAGE = "user.id=u-42,tenant.id=acme"


def _metadata_for(sampled: bool) -> list[tuple[str, str]]:
    flags = "01" if sampled else "00"
    parent = f"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-{flags}"
    return [("traceparent", parent), ("baggage", BAGGAGE), ("user-agent", "grpc-python")]


def _per_call(run: Callable[[], Any], number: int = 20000) -> float:
    return min(timeit.repeat(run, number=number, repeat=5)) / number * 1e6


def _extract_under_server_span(sampler: Sampler, sampled: bool) -> float:
    """extract, with the hop's server span (OpenTelemetry's, as it starts it) current."""
    tracer = TracerProvider(sampler=sampler).get_tracer("bench")
    metadata = _metadata_for(sampled)
    remote = propagate.extract(dict(metadata))
    span = tracer.start_span("bench.Echo/Unary", context=remote, kind=SpanKind.SERVER)
    token = otel_context.attach(trace.set_span_in_context(span, remote))
    try:
        return _per_call(
            lambda: oi.extract(metadata, _metadata.getter, hop=names.HOP_GRPC_SERVER, route=ROUTE)
        )
    finally:
        otel_context.detach(token)
        span.end()


def _otel_pass(announced: bool) -> float:
    """OpenTelemetry's server extract (a dict of the metadata), with the hop announced or not."""
    carrier = dict(_metadata_for(sampled=False))

    def one_rpc() -> None:  # each RPC runs in a contextvars.Context of its own, as in grpc
        if announced:
            oii.announce(names.HOP_GRPC_SERVER, ROUTE)
        propagate.extract(carrier)

    return _per_call(lambda: contextvars.Context().run(one_rpc))


def main() -> None:
    oi.configure(inbound="trust")
    propagate.set_global_textmap(
        CompositePropagator([TraceContextTextMapPropagator(), oi.IdentityBaggagePropagator()])
    )
    one_percent = ParentBased(TraceIdRatioBased(0.01))
    rows = [
        ("sampled (always on)", lambda: _extract_under_server_span(ALWAYS_ON, True)),
        ("dropped (parent-based 1%)", lambda: _extract_under_server_span(one_percent, False)),
        ("OpenTelemetry extract, no hop announced", lambda: _otel_pass(False)),
        ("OpenTelemetry extract, hop announced", lambda: _otel_pass(True)),
    ]
    print(f"{'extract, server span':<44}{'us per call':>12}")
    for title, measure in rows:
        print(f"{title:<44}{measure():>12.2f}")


if __name__ == "__main__":
    main()
