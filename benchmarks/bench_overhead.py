"""What identity adds, as a share of what OpenTelemetry's own instrumentation adds.

    python benchmarks/bench_overhead.py [grpc|http] [--quick | --rounds N] [--otel-baggage]
                                        [--same-textmap]

DESIGN.md's performance contract: three configurations of one loopback round trip, measured
interleaved in one run:

a = ``plain``     the bare round trip, no instrumentation
b = ``baseline``  OpenTelemetry's instrumentation on both sides, as OpenTelemetry ships it
                  (gRPC: its client instrumentor and server interceptor; HTTP:
                  RequestsInstrumentor and its WSGI middleware; its default textmap), SDK
                  tracer providers with a BatchSpanProcessor whose exporter drops spans, as a
                  deployed service has; two baggage members (user.id, tenant.id) per call
c = ``ours``      b plus otel-identity on both sides, as ``IdentityInstrumentor`` leaves a
                  service (its instrumentors, IdentitySpanProcessor, and its baggage step in
                  the global textmap in place of OpenTelemetry's)
``baseline-b`` is a second b: its distance from b is the run's noise floor.

The figure is (c-b)/(b-a) from each round's p50s, its median over rounds and the spread, for
every sampler (every span sampled; a parent-based 1% sampler) and inbound policy (``trust``;
``verify``, where the client signs and every server checks the signature) asked for.

Every configuration runs as services do, in processes of its own
(``_roundtrip.measure_apart``): each round starts, per configuration, a server process (three
servers sharing one handler object) and a client process set up once as that configuration's
client. Nothing is instrumented or switched between blocks, and no configuration's code is
cooled by another's in a shared process; the blocks of calls still take turns, one process
calling at a time. ``--otel-baggage`` keeps OpenTelemetry's baggage step in ours too: c then
decides every hop in a second pass of its own. ``--same-textmap`` gives b otel-identity's
baggage step too (cheaper than OpenTelemetry's), which leaves in c-b only the rest of
otel-identity. No timed assertion anywhere: this prints figures.
"""

from __future__ import annotations

import base64
import importlib
import os
import statistics
import sys
from collections.abc import Callable, Iterable
from typing import Any

import _roundtrip
import bench_grpc
import bench_http
import grpc
from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from otel_identity_grpc import GrpcIdentityInstrumentor, server_interceptor
from otel_identity_http import HttpClientIdentityInstrumentor, IdentityWSGIMiddleware

import otel_identity as oi

otel_grpc: Any = importlib.import_module("opentelemetry.instrumentation.grpc")
SAMPLERS = ("all", "1%")
POLICIES = ("trust", "verify")
# A fixed key, so the client process and every server process agree (benchmark only).
_KEY = "bench:" + base64.b64encode(b"k" * 32).decode("ascii")
_MODE = "OTEL_IDENTITY_BENCH_MODE"  # "<sampler>/<policy>", read by the server process
# The configurations whose processes put our baggage step in the textmap, comma-separated
_BAGGAGE = "OTEL_IDENTITY_BENCH_BAGGAGE"


class _Drop(SpanExporter):
    """An exporter that drops every span: the batch processor's work, without I/O."""

    def export(self, spans: Iterable[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def _sampler(name: str) -> Sampler:
    return ALWAYS_ON if name == "all" else ParentBased(TraceIdRatioBased(0.01))


def _configure(policy: str) -> None:
    if policy == "verify":
        oi.configure(inbound="verify", signing_keys=_KEY)
    else:
        oi.configure(inbound="trust")


def _provider(sampler: str, identity: bool) -> TracerProvider:
    provider = TracerProvider(sampler=_sampler(sampler))
    if identity:
        provider.add_span_processor(oi.IdentitySpanProcessor())
    provider.add_span_processor(BatchSpanProcessor(_Drop()))
    return provider


def _use_identity_baggage(name: str) -> None:
    """otel-identity's baggage step in the global textmap, where configuration ``name`` has it
    (ours, unless ``--otel-baggage``; b too with ``--same-textmap``)."""
    if name in os.environ.get(_BAGGAGE, "").split(","):
        propagate.set_global_textmap(
            CompositePropagator([TraceContextTextMapPropagator(), oi.IdentityBaggagePropagator()])
        )


def _server_mode(name: str) -> str:
    """The server process set up as configuration ``name``'s (its textmap, its policy); the
    run's sampler."""
    sampler, policy = os.environ[_MODE].split("/")
    if name == "ours":
        _configure(policy)
    _use_identity_baggage(name)
    return sampler


def build_grpc(name: str) -> tuple[int, Callable[[], None]]:
    """One gRPC server of configuration ``name``, in the server process."""
    sampler = _server_mode(name)
    interceptors: list[Any] = []
    if name != "plain":
        provider = _provider(sampler, identity=name == "ours")
        otel_interceptor = otel_grpc.server_interceptor(tracer_provider=provider)
        # ours: one stage with OpenTelemetry's, first in the list, as the instrumentor makes it
        ours = name == "ours"
        interceptors.append(server_interceptor(otel_interceptor) if ours else otel_interceptor)
    return bench_grpc.serve(interceptors)


def build_http(name: str) -> tuple[int, Callable[[], None]]:
    """One HTTP server of configuration ``name``, in the server process."""
    sampler = _server_mode(name)
    app: Any = bench_http._app
    if name != "plain":
        provider = _provider(sampler, identity=name == "ours")
        app = OpenTelemetryMiddleware(app, tracer_provider=provider)
        if name == "ours":
            app = IdentityWSGIMiddleware(app)
    return bench_http.serve(app)


def _client_mode(name: str) -> None:
    """The client process set up as configuration ``name``'s: its tracer provider, and the
    two baggage members of every call (through otel-identity in ours, OpenTelemetry's
    baggage API in b), attached for the life of the process."""
    if name == "plain":
        return
    sampler, policy = os.environ[_MODE].split("/")
    trace.set_tracer_provider(_provider(sampler, identity=name == "ours"))
    _use_identity_baggage(name)
    if name == "ours":
        _configure(policy)
        ctx = oi.set_identity(user_id="u-42", tenant_id="acme")
    else:
        ctx = baggage.set_baggage("tenant.id", "acme", baggage.set_baggage("user.id", "u-42"))
    otel_context.attach(ctx)  # never detached: the process is this configuration's client


def setup_grpc(name: str) -> None:
    """A client process of configuration ``name`` (gRPC)."""
    _client_mode(name)
    if name != "plain":
        otel_grpc.GrpcInstrumentorClient().instrument()
    if name == "ours":
        GrpcIdentityInstrumentor().instrument()


def connect_grpc(name: str, port: int) -> tuple[Callable[[], Any], Callable[[], None]]:
    """A channel of the client process (instrumented as the process is set up)."""
    target = f"127.0.0.1:{port}"
    return bench_grpc.calls_over(grpc.insecure_channel(target, options=bench_grpc.OWN_CONNECTION))


def setup_http(name: str) -> None:
    """A client process of configuration ``name`` (requests)."""
    _client_mode(name)
    if name != "plain":
        RequestsInstrumentor().instrument()
    if name == "ours":
        HttpClientIdentityInstrumentor().instrument()


RUNS = {
    "grpc": ("gRPC unary", build_grpc, setup_grpc, connect_grpc),
    "http": ("HTTP requests -> werkzeug", build_http, setup_http, bench_http.connect),
}


def share(results: _roundtrip.Results) -> list[float]:
    """(c-b)/(b-a) per round, from the round's p50 ratios to b (b is 1 by construction)."""
    plain, ours = results.ratios["plain"], results.ratios["ours"]
    return [(c - 1) / (1 - a) for a, c in zip(plain, ours, strict=True)]


def main() -> None:
    transports = [name for name in RUNS if name in sys.argv[1:]] or list(RUNS)
    with_our_step = [] if "--otel-baggage" in sys.argv else ["ours"]
    if "--same-textmap" in sys.argv:
        with_our_step += ["baseline", "baseline-b"]
    os.environ[_BAGGAGE] = ",".join(with_our_step)  # inherited by every process
    settings = _roundtrip.Settings(rounds=_roundtrip.rounds_from(sys.argv), calls=1000, warm=100)
    print(
        f"{'round trip':<27}{'sampler':>8}{'inbound':>8}{'b-a us':>9}{'c-b us':>9}"
        f"{'(c-b)/(b-a)':>13}   spread over rounds   noise floor"
    )
    for transport in transports:
        title, build, setup, connect = RUNS[transport]
        for sampler in SAMPLERS:
            for policy in POLICIES:
                os.environ[_MODE] = f"{sampler}/{policy}"  # inherited by every process
                results = _roundtrip.measure_apart(build, setup, connect, settings)
                _print_row(title, sampler, policy, results)


def _print_row(title: str, sampler: str, policy: str, results: _roundtrip.Results) -> None:
    p50 = {name: statistics.median(values) for name, values in results.samples.items()}
    shares = share(results)
    floor = abs(statistics.median(results.ratios["baseline-b"]) - 1)
    print(
        f"{title:<27}{sampler:>8}{policy:>8}{p50['baseline'] - p50['plain']:>9.1f}"
        f"{p50['ours'] - p50['baseline']:>9.1f}{statistics.median(shares):>13.2f}"
        f"   {min(shares):.2f}..{max(shares):.2f}{'':>8}{floor:.1%}",
        flush=True,
    )


if __name__ == "__main__":
    main()
