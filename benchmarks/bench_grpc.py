"""gRPC unary round trips on loopback: OpenTelemetry-instrumented baseline against the same
plus otel-identity, measured in one run, interleaved.

    python benchmarks/bench_grpc.py [--quick | --rounds N]

baseline = opentelemetry-instrumentation-grpc on both sides (its client instrumentor, its
           server interceptor), SDK tracer providers, two baggage members (user.id,
           tenant.id) on every call: plain OpenTelemetry already carries the identity, so only
           our added work differs
ours     = the same plus GrpcIdentityInstrumentor on the client (the channel's egress check)
           and otel-identity's server interceptor (the hop; one stage with OpenTelemetry's,
           as the instrumentor makes it), with IdentitySpanProcessor on both sides
plain    = grpc without any instrumentation, for scale

The servers run in another process, as a service does: sharing one interpreter lock, client
and server would wait for each other and every microsecond either side adds would count
several times. How rounds, connections and the noise floor are handled: see _roundtrip.py.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from concurrent import futures
from typing import Any

import _roundtrip
import grpc
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import TracerProvider
from otel_identity_grpc import GrpcIdentityInstrumentor, server_interceptor

import otel_identity as oi

METHOD = "/bench.Echo/Unary"
PAYLOAD = b"x" * 64
# opentelemetry-instrumentation-grpc is untyped; reach it through one Any-typed name.
otel_grpc: Any = importlib.import_module("opentelemetry.instrumentation.grpc")
# Captured before anything patches channel creation: the plain configuration's channels.
_plain_channel = grpc.insecure_channel
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]  # one TCP connection per channel


def _echo(request: bytes, context: Any) -> bytes:
    return request


def build(name: str) -> tuple[int, Callable[[], None]]:
    """One configuration's server, in the server process (interceptors placed as the
    instrumentors place them: OpenTelemetry's first, made one stage with otel-identity's)."""
    interceptors = []
    if name != "plain":
        provider = TracerProvider()
        if name == "ours":
            provider.add_span_processor(oi.IdentitySpanProcessor())
        otel_interceptor = otel_grpc.server_interceptor(tracer_provider=provider)
        ours = name == "ours"
        interceptors.append(server_interceptor(otel_interceptor) if ours else otel_interceptor)
    return serve(interceptors)


def serve(interceptors: list[Any]) -> tuple[int, Callable[[], None]]:
    """The echo server with ``interceptors``, started on a free loopback port."""
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Unary": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4), handlers=[handler], interceptors=interceptors
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return port, lambda: server.stop(None).wait(5)


def connect(name: str, port: int) -> tuple[Callable[[], Any], Callable[[], None]]:
    """A client connection of configuration ``name``: (one call, close)."""
    target = f"127.0.0.1:{port}"
    if name == "plain":
        channel = _plain_channel(target, options=OWN_CONNECTION)
    elif name == "ours":
        channel = grpc.insecure_channel(target, options=OWN_CONNECTION)
    else:
        with suppress_instrumentation():  # otel-identity's channel patch steps aside
            channel = grpc.insecure_channel(target, options=OWN_CONNECTION)
    return calls_over(channel)


def calls_over(channel: grpc.Channel) -> tuple[Callable[[], Any], Callable[[], None]]:
    """(one call of the benchmark's method over ``channel``, close it)."""
    stub = channel.unary_unary(METHOD)
    return (lambda: stub(PAYLOAD, timeout=10)), channel.close


def main() -> None:
    settings, identity_processor = _roundtrip.client_setup(sys.argv)
    otel_grpc.GrpcInstrumentorClient().instrument()
    GrpcIdentityInstrumentor().instrument()  # on for the whole run; see connect()

    def before(name: str) -> None:
        identity_processor.enabled = name == "ours"

    with oi.use_identity(user_id="u-42", tenant_id="acme"):
        results = _roundtrip.measure(build, connect, settings, before)
    _roundtrip.report("gRPC unary round trip on loopback", results, settings)


if __name__ == "__main__":
    main()
