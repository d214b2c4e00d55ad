"""What reaches the wire: identity goes only to targets on the allow list, whoever injected it.

Real servers on 127.0.0.1 (allowed: ``egress_allow="127.0.0.1"``) and 127.0.0.2 (outside),
with no otel-identity on the server side: each response reports the raw ``baggage`` metadata
that arrived (every value) and which server answered. The client runs with OpenTelemetry's
gRPC client instrumentation loaded before ours, after ours, or not at all, with identity as
the only baggage or next to another member. The client span's events must agree with the
wire: ``identity.stripped`` exactly when identity was there to send and did not leave.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from typing import Any

import grpc
import grpc.aio
import pytest
from opentelemetry import baggage
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Tracer
from otel_identity_grpc import GrpcIdentityInstrumentor, _wire

import otel_identity as oi
from tests.egress_events import stripped, stripped_addresses

from .otel_identity_grpc_echo import SERVICE, SHAPES, aio_call, call, method, otel_grpc

ALLOWED, OUTSIDE = "127.0.0.1", "127.0.0.2"
ORDERS = ("ours-only", "ours-first", "theirs-first")
BAGGAGE = ("identity-alone", "with-other-member")


def _reply(label: str, servicer_context: Any) -> bytes:
    received = [v for k, v in servicer_context.invocation_metadata() if k == "baggage"]
    return json.dumps({"server": label, "baggage": received}).encode()


def _handler(label: str, aio: bool) -> grpc.GenericRpcHandler:
    def uu(request: Any, context: Any) -> bytes:
        return _reply(label, context)

    def us(request: Any, context: Any) -> Iterator[bytes]:
        yield _reply(label, context)

    def su(requests: Any, context: Any) -> bytes:
        for _ in requests:
            pass
        return _reply(label, context)

    def ss(requests: Any, context: Any) -> Iterator[bytes]:
        for _ in requests:
            pass
        yield _reply(label, context)

    async def auu(request: Any, context: Any) -> bytes:
        return _reply(label, context)

    async def aus(request: Any, context: Any) -> AsyncIterator[bytes]:
        yield _reply(label, context)

    async def asu(requests: Any, context: Any) -> bytes:
        async for _ in requests:
            pass
        return _reply(label, context)

    async def ass(requests: Any, context: Any) -> AsyncIterator[bytes]:
        async for _ in requests:
            pass
        yield _reply(label, context)

    shapes = (auu, aus, asu, ass) if aio else (uu, us, su, ss)
    factories = (
        grpc.unary_unary_rpc_method_handler,
        grpc.unary_stream_rpc_method_handler,
        grpc.stream_unary_rpc_method_handler,
        grpc.stream_stream_rpc_method_handler,
    )
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {shape: f(b) for shape, f, b in zip(SHAPES, factories, shapes, strict=True)},  # type: ignore[operator]
    )


@contextlib.contextmanager
def _sync_server(host: str, label: str) -> Iterator[int]:
    pool = futures.ThreadPoolExecutor(max_workers=2)
    server = grpc.server(pool, handlers=[_handler(label, aio=False)])
    port = server.add_insecure_port(f"{host}:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(grace=None).wait(5)
        pool.shutdown(wait=False)


@contextlib.asynccontextmanager
async def _aio_server(host: str, label: str) -> AsyncIterator[int]:
    server = grpc.aio.server(handlers=[_handler(label, aio=True)])
    port = server.add_insecure_port(f"{host}:0")
    await server.start()
    try:
        yield port
    finally:
        await server.stop(grace=None)


def _instrument(order: str, aio: bool) -> None:
    theirs = otel_grpc.GrpcAioInstrumentorClient() if aio else otel_grpc.GrpcInstrumentorClient()
    ordered: list[Any] = {
        "ours-only": [GrpcIdentityInstrumentor()],
        "ours-first": [GrpcIdentityInstrumentor(), theirs],
        "theirs-first": [theirs, GrpcIdentityInstrumentor()],
    }[order]
    for instrumentor in ordered:
        instrumentor.instrument()


@contextlib.contextmanager
def _caller(tracer: Tracer, members: str) -> Iterator[None]:
    ctx = oi.set_identity(user_id="u-1", tenant_id="acme")
    if members == "with-other-member":
        ctx = baggage.set_baggage("feature", "blue", ctx)
    token = otel_context.attach(ctx)
    try:
        with tracer.start_as_current_span("caller"):
            yield
    finally:
        otel_context.detach(token)


def _values(responses: list[dict[str, Any]]) -> list[str]:
    return [value for response in responses for value in response["baggage"]]


def _assert_wire(responses: list[dict[str, Any]], allowed: bool, members: str) -> None:
    values = _values(responses)
    if allowed:
        assert values, responses
        assert all("user.id=u-1" in v and "tenant.id=acme" in v for v in values)
    elif members == "identity-alone":
        assert values == []  # the header goes, even with nothing left to write
    else:
        assert values and all(v == "feature=blue" for v in values), values
    if members == "with-other-member":
        assert all(v.count("feature=blue") == 1 for v in values)


def _assert_events(spans: InMemorySpanExporter, order: str, calls: int) -> None:
    kind = SpanKind.INTERNAL if order == "ours-only" else SpanKind.CLIENT
    assert stripped(spans) == [(kind, OUTSIDE)] * calls


@pytest.mark.parametrize("members", BAGGAGE)
@pytest.mark.parametrize("order", ORDERS)
def test_sync_identity_reaches_the_wire_only_inside_the_allow_list(
    spans: InMemorySpanExporter, tracer: Tracer, order: str, members: str
) -> None:
    oi.configure(egress_allow=ALLOWED)
    _instrument(order, aio=False)
    with _sync_server(ALLOWED, "a") as a, _sync_server(OUTSIDE, "b") as b:
        with grpc.insecure_channel(f"{ALLOWED}:{a}") as to_a:
            with grpc.insecure_channel(f"{OUTSIDE}:{b}") as to_b:
                with _caller(tracer, members):
                    inside = [r for shape in SHAPES for r in call(to_a, shape)]
                    assert stripped(spans) == []
                    outside = [r for shape in SHAPES for r in call(to_b, shape)]
    _assert_wire(inside, allowed=True, members=members)
    _assert_wire(outside, allowed=False, members=members)
    _assert_events(spans, order, calls=len(SHAPES))


@pytest.mark.parametrize("members", BAGGAGE)
@pytest.mark.parametrize("order", ORDERS)
def test_aio_identity_reaches_the_wire_only_inside_the_allow_list(
    spans: InMemorySpanExporter, tracer: Tracer, order: str, members: str
) -> None:
    oi.configure(egress_allow=ALLOWED)
    _instrument(order, aio=True)

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
        async with _aio_server(ALLOWED, "a") as a, _aio_server(OUTSIDE, "b") as b:
            async with grpc.aio.insecure_channel(f"{ALLOWED}:{a}") as to_a:
                async with grpc.aio.insecure_channel(f"{OUTSIDE}:{b}") as to_b:
                    with _caller(tracer, members):
                        inside = [r for shape in SHAPES for r in await aio_call(to_a, shape)]
                        events_inside = len(stripped(spans))
                        outside = [r for shape in SHAPES for r in await aio_call(to_b, shape)]
        return inside, outside, events_inside

    inside, outside, events_inside = asyncio.run(scenario())
    assert events_inside == 0
    _assert_wire(inside, allowed=True, members=members)
    _assert_wire(outside, allowed=False, members=members)
    _assert_events(spans, order, calls=len(SHAPES))


@pytest.mark.parametrize("order", ORDERS)
def test_identity_the_application_wrote_into_metadata_is_filtered_at_the_wire(
    spans: InMemorySpanExporter, tracer: Tracer, order: str
) -> None:
    """No identity in the context, so nothing overwrites the application's own two entries."""
    oi.configure(egress_allow=ALLOWED)
    _instrument(order, aio=False)
    sent = [("baggage", "user.id=forged"), ("baggage", "tenant.id=t,feature=blue")]
    with _sync_server(OUTSIDE, "b") as b, grpc.insecure_channel(f"{OUTSIDE}:{b}") as channel:
        with tracer.start_as_current_span("caller"):
            responses = call(channel, "UnaryUnary", metadata=sent)
    assert _values(responses) == ["feature=blue"]
    assert stripped_addresses(spans) == [OUTSIDE]


# --- targets with several addresses: every address is judged ----------------------------

ROUND_ROBIN = [("grpc.lb_policy_name", "round_robin")]


@pytest.mark.parametrize("aio", [False, True], ids=["sync", "aio"])
@pytest.mark.parametrize("order", ["ours-first", "theirs-first"])
def test_a_target_with_an_outside_address_gets_no_identity_on_any_call(
    spans: InMemorySpanExporter, tracer: Tracer, order: str, aio: bool
) -> None:
    oi.configure(egress_allow=ALLOWED)
    _instrument(order, aio=aio)
    calls = 8

    def run_sync() -> list[dict[str, Any]]:
        with _sync_server(ALLOWED, "a") as a, _sync_server(OUTSIDE, "b") as b:
            target = f"ipv4:{ALLOWED}:{a},{OUTSIDE}:{b}"
            with grpc.insecure_channel(target, options=ROUND_ROBIN) as channel:
                grpc.channel_ready_future(channel).result(timeout=10)
                with _caller(tracer, "identity-alone"):
                    return [r for _ in range(calls) for r in call(channel, "UnaryUnary")]

    async def run_aio() -> list[dict[str, Any]]:
        async with _aio_server(ALLOWED, "a") as a, _aio_server(OUTSIDE, "b") as b:
            target = f"ipv4:{ALLOWED}:{a},{OUTSIDE}:{b}"
            async with grpc.aio.insecure_channel(target, options=ROUND_ROBIN) as channel:
                await channel.channel_ready()
                with _caller(tracer, "identity-alone"):
                    return [r for _ in range(calls) for r in await aio_call(channel, "UnaryUnary")]

    responses = asyncio.run(run_aio()) if aio else run_sync()
    assert {r["server"] for r in responses} == {"a", "b"}  # round robin reached both
    assert _values(responses) == []
    assert stripped(spans) == [(SpanKind.CLIENT, OUTSIDE)] * calls


def test_a_target_whose_addresses_are_all_allowed_carries_identity(tracer: Tracer) -> None:
    oi.configure(egress_allow=ALLOWED)
    _instrument("ours-first", aio=False)
    with _sync_server(ALLOWED, "a") as a, _sync_server(ALLOWED, "c") as c:
        target = f"ipv4:{ALLOWED}:{a},{ALLOWED}:{c}"
        with grpc.insecure_channel(target, options=ROUND_ROBIN) as channel:
            with _caller(tracer, "identity-alone"):
                responses = [r for _ in range(4) for r in call(channel, "UnaryUnary")]
    _assert_wire(responses, allowed=True, members="identity-alone")


def test_the_wire_filter_knows_this_grpc() -> None:
    """The filter wraps grpc's private channel class: an upgrade that changes it fails here."""
    assert _wire.internals_known()
    GrpcIdentityInstrumentor().instrument()
    channel = grpc.insecure_channel("127.0.0.2:1")
    try:
        assert isinstance(channel._channel.unary_unary("/x/y"), _wire.WireCallable)
    finally:
        channel.close()
    GrpcIdentityInstrumentor().uninstrument()
    assert not any(
        hasattr(getattr(grpc._channel.Channel, name), "_self_wrapper")
        for name in ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
    )


@pytest.mark.parametrize("order", ORDERS)
def test_sync_identity_stops_at_the_wire_once_the_textmap_displaces_our_baggage_step(
    tracer: Tracer, order: str
) -> None:
    """A channel already found allowed notices a textmap set later (fail closed)."""
    from opentelemetry import propagate
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    def opentelemetrys() -> CompositePropagator:
        return CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])

    original = propagate.get_global_textmap()
    propagate.set_global_textmap(opentelemetrys())
    core = oi.IdentityInstrumentor()
    core.instrument()
    try:
        oi.configure(egress_allow=ALLOWED)
        _instrument(order, aio=False)
        with _sync_server(ALLOWED, "a") as a, grpc.insecure_channel(f"{ALLOWED}:{a}") as to_a:
            unary = to_a.unary_unary(method(SHAPES[0]))  # one stub method, used for every call
            with _caller(tracer, "identity-alone"):
                before = json.loads(unary(b"x", timeout=10))
                propagate.set_global_textmap(opentelemetrys())  # someone else's, set later
                after = json.loads(unary(b"x", timeout=10))
    finally:
        core.uninstrument()
        propagate.set_global_textmap(original)
    assert _values([before]) and all("user.id=u-1" in v for v in _values([before]))
    assert not [v for v in _values([after]) if "user.id" in v], after
