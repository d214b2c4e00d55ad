"""What identity adds, as a share of what OpenTelemetry's own instrumentation adds.

    python benchmarks/bench_overhead.py [grpc|http] [--quick | --rounds N] [--otel-baggage]

DESIGN.md's performance contract: three configurations of one loopback round trip, measured
interleaved in one run (see _roundtrip.py for how rounds, servers and blocks cancel noise):

a = ``plain``     the bare round trip, no instrumentation
b = ``baseline``  OpenTelemetry's instrumentation on both sides (gRPC: its client instrumentor
                  and server interceptor; HTTP: RequestsInstrumentor and its WSGI middleware),
                  SDK tracer providers with a BatchSpanProcessor whose exporter drops spans, as
                  a deployed service has; two baggage members (user.id, tenant.id) per call
c = ``ours``      b plus otel-identity on both sides (its instrumentors and
                  IdentitySpanProcessor)
``baseline-b`` is a second b: its distance from b is the run's noise floor.

The figure is (c-b)/(b-a) from each round's p50s, its median over rounds and the spread, for
every sampler (every span sampled; a parent-based 1% sampler) and inbound policy (``trust``;
``verify``, where the client signs and every server checks the signature) asked for.
Servers are made fresh every round, in another process; their handlers are built once per
process and shared by every server of it. No timed assertion anywhere: this prints figures.

Both processes run with otel-identity's baggage step in the global textmap, as
``IdentityInstrumentor`` leaves it in a deployed service (one textmap per process, so b and c
alike: b is then OpenTelemetry's instrumentation with otel-identity's propagator, whose parse
is the cheaper, so b-a is if anything smaller than with OpenTelemetry's own step and the ratio
larger). ``--otel-baggage`` keeps OpenTelemetry's default textmap in both instead: c then
decides every hop in a second pass of its own.
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
from opentelemetry import propagate, trace
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
_BAGGAGE = "OTEL_IDENTITY_BENCH_BAGGAGE"  # "identity": our baggage step in both processes


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


def _use_identity_baggage() -> None:
    if os.environ.get(_BAGGAGE) == "identity":
        propagate.set_global_textmap(
            CompositePropagator([TraceContextTextMapPropagator(), oi.IdentityBaggagePropagator()])
        )


def _server_mode() -> tuple[str, str]:
    sampler, policy = os.environ[_MODE].split("/")
    _configure(policy)
    _use_identity_baggage()
    return sampler, policy


def build_grpc(name: str) -> tuple[int, Callable[[], None]]:
    """One gRPC server of configuration ``name``, in the server process."""
    sampler, _ = _server_mode()
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
    sampler, _ = _server_mode()
    app: Any = bench_http._app
    if name != "plain":
        provider = _provider(sampler, identity=name == "ours")
        app = OpenTelemetryMiddleware(app, tracer_provider=provider)
        if name == "ours":
            app = IdentityWSGIMiddleware(app)
    return bench_http.serve(app)


def _grpc_run(settings: _roundtrip.Settings, before: Callable[[str], None]) -> Any:
    otel_grpc.GrpcInstrumentorClient().instrument()
    GrpcIdentityInstrumentor().instrument()  # bench_grpc.connect keeps it off b's channels
    try:
        return _roundtrip.measure(build_grpc, bench_grpc.connect, settings, before)
    finally:
        GrpcIdentityInstrumentor().uninstrument()
        otel_grpc.GrpcInstrumentorClient().uninstrument()


def _http_run(settings: _roundtrip.Settings, before: Callable[[str], None]) -> Any:
    RequestsInstrumentor().instrument()
    client = HttpClientIdentityInstrumentor()

    def switch(name: str) -> None:
        before(name)
        ours = name == "ours"
        if ours != client.is_instrumented_by_opentelemetry:
            (client.instrument if ours else client.uninstrument)()

    try:
        return _roundtrip.measure(build_http, bench_http.connect, settings, switch)
    finally:
        switch("plain")
        RequestsInstrumentor().uninstrument()


RUNS = {"grpc": ("gRPC unary", _grpc_run), "http": ("HTTP requests -> werkzeug", _http_run)}


def share(results: _roundtrip.Results) -> list[float]:
    """(c-b)/(b-a) per round, from the round's p50 ratios to b (b is 1 by construction)."""
    plain, ours = results.ratios["plain"], results.ratios["ours"]
    return [(c - 1) / (1 - a) for a, c in zip(plain, ours, strict=True)]


class _Switchable(Sampler):
    """The client's sampler, switched per mode: one global tracer provider for the run."""

    def __init__(self) -> None:
        self.current: Sampler = ALWAYS_ON

    def should_sample(self, *args: Any, **kwargs: Any) -> Any:
        return self.current.should_sample(*args, **kwargs)

    def get_description(self) -> str:
        return f"Switchable({self.current.get_description()})"


def main() -> None:
    transports = [name for name in RUNS if name in sys.argv[1:]] or list(RUNS)
    if "--otel-baggage" not in sys.argv:
        os.environ[_BAGGAGE] = "identity"  # inherited by the server process
    _use_identity_baggage()
    settings = _roundtrip.Settings(rounds=_roundtrip.rounds_from(sys.argv), calls=1000, warm=100)
    sampling = _Switchable()
    processor = oi.IdentitySpanProcessor()
    client = TracerProvider(sampler=sampling)
    client.add_span_processor(processor)
    client.add_span_processor(BatchSpanProcessor(_Drop()))
    trace.set_tracer_provider(client)

    def before(name: str) -> None:
        processor.enabled = name == "ours"

    print(
        f"{'round trip':<27}{'sampler':>8}{'inbound':>8}{'b-a us':>9}{'c-b us':>9}"
        f"{'(c-b)/(b-a)':>13}   spread over rounds   noise floor"
    )
    for transport in transports:
        title, run = RUNS[transport]
        for sampler in SAMPLERS:
            for policy in POLICIES:
                os.environ[_MODE] = f"{sampler}/{policy}"  # inherited by the server process
                sampling.current = _sampler(sampler)
                _configure(policy)
                with oi.use_identity(user_id="u-42", tenant_id="acme"):
                    results = run(settings, before)
                _print_row(title, sampler, policy, results)
    client.shutdown()


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
