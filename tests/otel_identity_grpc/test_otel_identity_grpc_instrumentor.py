"""GrpcIdentityInstrumentor: installs, uninstalls, never twice, and composes with
opentelemetry-instrumentation-grpc in either load order."""

from __future__ import annotations

import asyncio
import json
from concurrent import futures
from typing import Any

import grpc
import grpc.aio
import pytest
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from otel_identity_grpc import GrpcIdentityInstrumentor, _instrumentor, _server

import otel_identity as oi
from otel_identity import _telemetry, names

from .otel_identity_grpc_echo import (
    ORIGINALS,
    SHAPES,
    aio_call,
    aio_server,
    call,
    handler,
    method,
    otel_grpc,
    sync_server,
)


def _server_hops() -> int:
    return sum(n for (h, _), n in _telemetry.hop_counts().items() if h == names.HOP_GRPC_SERVER)


def _instrument_in_order(opentelemetry_first: bool, *otel: Any) -> None:
    ordered: list[Any] = [*otel, GrpcIdentityInstrumentor()]
    if not opentelemetry_first:
        ordered.reverse()
    for instrumentor in ordered:
        instrumentor.instrument()


def _sync_round_trip(
    shape: str = "UnaryUnary", user_id: str | None = None, tenant_id: str | None = None
) -> list[dict[str, Any]]:
    with sync_server() as target, grpc.insecure_channel(target) as channel:
        with oi.use_identity(user_id=user_id, tenant_id=tenant_id):
            return call(channel, shape)


def _aio_round_trip(
    shape: str = "UnaryUnary", user_id: str | None = None, tenant_id: str | None = None
) -> list[dict[str, Any]]:
    async def scenario() -> list[dict[str, Any]]:
        async with aio_server() as target, grpc.aio.insecure_channel(target) as channel:
            with oi.use_identity(user_id=user_id, tenant_id=tenant_id):
                return await aio_call(channel, shape)

    return asyncio.run(scenario())


@pytest.mark.parametrize("shape", SHAPES)
def test_instrumented_sync_servers_and_channels_carry_identity(shape: str) -> None:
    GrpcIdentityInstrumentor().instrument()
    responses = _sync_round_trip(shape, user_id="u-1", tenant_id="acme")
    assert responses and all(r["user"] == "u-1" for r in responses)


def test_calls_made_with_instrumentation_suppressed_carry_no_identity() -> None:
    # An exporter's own calls (OTLP over gRPC, say) run suppressed: nothing is added to them.
    GrpcIdentityInstrumentor().instrument()
    with sync_server() as target, grpc.insecure_channel(target) as channel:
        with oi.use_identity(user_id="u-1"), suppress_instrumentation():
            (suppressed,) = call(channel, "UnaryUnary")
        with oi.use_identity(user_id="u-1"):
            (carried,) = call(channel, "UnaryUnary")
    assert suppressed["baggage"] is None and suppressed["user"] is None
    assert carried["user"] == "u-1"


@pytest.mark.parametrize("shape", SHAPES)
def test_instrumented_aio_servers_and_channels_carry_identity(shape: str) -> None:
    GrpcIdentityInstrumentor().instrument()
    responses = _aio_round_trip(shape, user_id="u-2", tenant_id="beta")
    assert responses and all(r["user"] == "u-2" for r in responses)


def test_uninstrument_restores_every_grpc_function() -> None:
    GrpcIdentityInstrumentor().instrument()
    assert all(getattr(m, n) is not f for (m, n), f in ORIGINALS.items())
    GrpcIdentityInstrumentor().uninstrument()
    assert all(getattr(m, n) is f for (m, n), f in ORIGINALS.items())
    before = _server_hops()
    assert _sync_round_trip(user_id="u-1")[0]["user"] is None
    assert _server_hops() == before


def test_servers_created_while_instrumented_go_quiet_after_uninstrument() -> None:
    GrpcIdentityInstrumentor().instrument()
    with sync_server() as target, grpc.insecure_channel(target) as channel:
        GrpcIdentityInstrumentor().uninstrument()
        before = _server_hops()
        with oi.use_identity(user_id="u-1"):
            assert call(channel, "UnaryUnary")[0]["user"] is None
        assert _server_hops() == before


def test_instrumenting_twice_installs_one_interceptor() -> None:
    GrpcIdentityInstrumentor().instrument()
    GrpcIdentityInstrumentor().instrument()
    GrpcIdentityInstrumentor()._instrument()  # past Any's own guard
    before = _server_hops()
    assert _sync_round_trip(user_id="u-1")[0]["user"] == "u-1"
    assert _aio_round_trip(user_id="u-1")[0]["user"] == "u-1"
    assert _server_hops() == before + 2


def test_reinstrumenting_under_opentelemetrys_patch_adds_no_second_interceptor(
    spans: InMemorySpanExporter,
) -> None:
    # OpenTelemetry replaces grpc.server with a plain function holding ours: uninstrument
    # cannot remove our patch, so it must go quiet, and a new instrument() must not double up.
    GrpcIdentityInstrumentor().instrument()
    otel_grpc.GrpcInstrumentorServer().instrument()
    GrpcIdentityInstrumentor().uninstrument()
    before = _server_hops()
    assert _sync_round_trip(user_id="u-1")[0]["user"] is None
    assert _server_hops() == before
    assert any(s.kind is SpanKind.SERVER for s in spans.get_finished_spans())
    GrpcIdentityInstrumentor().instrument()
    assert _sync_round_trip(user_id="u-1")[0]["user"] == "u-1"
    assert _server_hops() == before + 1


def _server_spans(spans: InMemorySpanExporter, shape: str) -> list[Any]:
    return [
        s
        for s in spans.get_finished_spans()
        if s.kind is SpanKind.SERVER and s.name == method(shape)
    ]


def _missing_count(spans: InMemorySpanExporter) -> int:
    return sum(
        1 for s in spans.get_finished_spans() for e in s.events if e.name == names.EVENT_MISSING
    )


ORDERS = pytest.mark.parametrize(
    "opentelemetry_first", [True, False], ids=["otel-first", "ours-first"]
)


@ORDERS
@pytest.mark.parametrize("shape", SHAPES)
def test_sync_with_opentelemetry_grpc_in_either_order(
    spans: InMemorySpanExporter, shape: str, opentelemetry_first: bool
) -> None:
    _instrument_in_order(
        opentelemetry_first, otel_grpc.GrpcInstrumentorServer(), otel_grpc.GrpcInstrumentorClient()
    )
    before = _server_hops()
    responses = _sync_round_trip(shape, user_id="u-1", tenant_id="acme")
    assert all(r["user"] == "u-1" for r in responses)
    (server,) = _server_spans(spans, shape)
    client = next(s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT)
    assert server.attributes is not None and server.attributes[names.USER_ID] == "u-1"
    assert server.parent is not None and server.parent.span_id == client.context.span_id
    assert _missing_count(spans) == 0
    spans.clear()
    _sync_round_trip(shape)
    (server,) = _server_spans(spans, shape)
    assert [e.name for e in server.events].count(names.EVENT_MISSING) == 1
    assert _missing_count(spans) == 1
    assert _server_hops() == before + 2


@ORDERS
@pytest.mark.parametrize("shape", SHAPES)
def test_aio_with_opentelemetry_grpc_in_either_order(
    spans: InMemorySpanExporter, shape: str, opentelemetry_first: bool
) -> None:
    _instrument_in_order(
        opentelemetry_first,
        otel_grpc.GrpcAioInstrumentorServer(),
        otel_grpc.GrpcAioInstrumentorClient(),
    )
    before = _server_hops()
    responses = _aio_round_trip(shape, user_id="u-2", tenant_id="beta")
    assert all(r["user"] == "u-2" for r in responses)
    (server,) = _server_spans(spans, shape)
    assert server.attributes is not None and server.attributes[names.TENANT_ID] == "beta"
    assert _missing_count(spans) == 0
    spans.clear()
    _aio_round_trip(shape)
    (server,) = _server_spans(spans, shape)
    assert [e.name for e in server.events].count(names.EVENT_MISSING) == 1
    assert _missing_count(spans) == 1
    assert _server_hops() == before + 2


class _SeesIdentity(grpc.ServerInterceptor):  # type: ignore[misc]
    """An application interceptor: its behavior wrapper should run inside the hop."""

    def __init__(self) -> None:
        self.seen: list[object] = []

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        inner = continuation(details)
        if inner is None or inner.unary_unary is None:
            return inner

        def behavior(request: Any, context: Any) -> Any:
            self.seen.append(oi.get_identity())
            return inner.unary_unary(request, context)

        return inner._replace(unary_unary=behavior)


@ORDERS
def test_positional_interceptors_keep_working_and_application_ones_see_identity(
    opentelemetry_first: bool,
) -> None:
    _instrument_in_order(opentelemetry_first, otel_grpc.GrpcInstrumentorServer())
    app = _SeesIdentity()
    pool = futures.ThreadPoolExecutor(max_workers=2)
    server = grpc.server(pool, [handler()], [app])  # interceptors passed positionally
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            with oi.use_identity(user_id="u-1"):
                assert call(channel, "UnaryUnary")[0]["user"] == "u-1"
    finally:
        server.stop(None).wait(5)
        pool.shutdown(wait=False)
    assert [getattr(i, "user_id", None) for i in app.seen] == ["u-1"]


def test_server_interceptor_is_made_one_stage_with_opentelemetrys_or_goes_first() -> None:
    app, otel = _SeesIdentity(), otel_grpc.server_interceptor()
    ours = object()
    fused = _server.OpenTelemetryAndIdentity
    first, rest = _instrumentor._with_server_interceptor([otel, app], ours, fused)[0], [app]
    assert isinstance(first, fused) and first.opentelemetry is otel
    assert _instrumentor._with_server_interceptor([otel, app], ours, fused)[1:] == rest
    # not first in the list (an interceptor before it may extract first): right after it
    other = _SeesIdentity()
    placed = _instrumentor._with_server_interceptor([other, otel, app], ours, fused)
    assert placed == [other, otel, ours, app]
    assert _instrumentor._with_server_interceptor([app], ours, fused) == [ours, app]
    assert _instrumentor._with_server_interceptor(None, ours, fused) == [ours]
    # never a second one of ours
    assert _instrumentor._with_server_interceptor([first, app], ours, fused) == [first, app]


def test_instrumented_sync_channel_behaves_like_a_grpc_channel() -> None:
    GrpcIdentityInstrumentor().instrument()
    with sync_server() as target, grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)  # subscribe/unsubscribe
        unary = channel.unary_unary(method("UnaryUnary"))
        with oi.use_identity(user_id="u-1"):
            response, call = unary.with_call(b"x", timeout=10)
            future = unary.future(b"x", timeout=10)
            positional = unary(b"x", 10, [("x-request-id", "r-1")])
            stream = channel.unary_stream(method("UnaryStream"))(b"x", timeout=10)
            streamed = list(stream)
        assert call.code() is grpc.StatusCode.OK
        assert stream.code() is grpc.StatusCode.OK  # the call object is still the call
        for raw in (response, future.result(timeout=10), positional, *streamed):
            assert json.loads(raw)["user"] == "u-1"


@ORDERS
@pytest.mark.parametrize("shape", ["UnaryUnary", "UnaryStream"])
def test_signed_identity_is_verified_on_the_server_with_opentelemetry_in_either_order(
    spans: InMemorySpanExporter, shape: str, opentelemetry_first: bool
) -> None:
    # With signing on, the identity that leaves differs from the caller's (it gains a
    # signature): whichever interceptor injects last must send the signed one.
    oi.configure(signing_keys={"k1": b"s" * 32})
    _instrument_in_order(
        opentelemetry_first, otel_grpc.GrpcInstrumentorServer(), otel_grpc.GrpcInstrumentorClient()
    )
    responses = _sync_round_trip(shape, user_id="u-1", tenant_id="acme")
    assert all(r["user"] == "u-1" and "identity.sig=" in r["baggage"] for r in responses)
    (server,) = _server_spans(spans, shape)
    assert server.attributes is not None and server.attributes[names.IDENTITY_VERIFIED] is True
    assert not [
        e for s in spans.get_finished_spans() for e in s.events if e.name == names.EVENT_REJECTED
    ]


def test_instrumented_secure_channels_carry_identity_sync_and_aio() -> None:
    # Local credentials: a real secure channel over loopback TCP, no certificates needed.
    tcp = grpc.LocalConnectionType.LOCAL_TCP
    GrpcIdentityInstrumentor().instrument()
    pool = futures.ThreadPoolExecutor(max_workers=2)
    server = grpc.server(pool, handlers=[handler()])
    port = server.add_secure_port("127.0.0.1:0", grpc.local_server_credentials(tcp))
    server.start()
    target = f"127.0.0.1:{port}"
    try:
        with grpc.secure_channel(target, grpc.local_channel_credentials(tcp)) as channel:
            with oi.use_identity(user_id="u-1"):
                assert call(channel, "UnaryUnary")[0]["user"] == "u-1"

        async def scenario() -> list[dict[str, Any]]:
            credentials = grpc.local_channel_credentials(tcp)
            # options, compression and interceptors passed positionally
            async with grpc.aio.secure_channel(target, credentials, None, None, []) as channel:
                with oi.use_identity(user_id="u-2"):
                    return await aio_call(channel, "UnaryStream")

        assert [r["user"] for r in asyncio.run(scenario())] == ["u-2"] * 3
    finally:
        server.stop(None).wait(5)
        pool.shutdown(wait=False)
