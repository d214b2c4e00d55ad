"""Client side: identity goes only to targets on the egress allow list, whoever injected it.

Two real servers: 127.0.0.1 (allowed) and 127.0.0.2 (outside ``egress_allow="127.0.0.1"``).
What each server received on the wire is in its responses (``baggage``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import grpc.aio
import otel_identity_grpc as oi_grpc
import pytest
from opentelemetry import baggage
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer
from otel_identity_grpc import GrpcIdentityInstrumentor

import otel_identity as oi
from tests.egress_events import stripped_addresses

from .otel_identity_grpc_echo import SHAPES, aio_call, aio_server, call, otel_grpc, sync_server

ALLOWED, OUTSIDE = "127.0.0.1", "127.0.0.2"


@pytest.fixture(autouse=True)
def _allow_only_127_0_0_1() -> None:
    oi.configure(egress_allow=ALLOWED)


@contextlib.contextmanager
def _identity_and_other_baggage() -> Iterator[None]:
    with oi.use_identity(user_id="u-1", tenant_id="acme"):
        token = otel_context.attach(baggage.set_baggage("feature", "blue"))
        try:
            yield
        finally:
            otel_context.detach(token)


def _assert_split(allowed: list[dict[str, Any]], outside: list[dict[str, Any]]) -> None:
    for response in allowed:
        assert response["user"] == "u-1"
        assert "user.id=u-1" in response["baggage"]
        assert "tenant.id=acme" in response["baggage"]
    for response in outside:
        assert response["user"] is None
        assert "user.id" not in response["baggage"]
        assert "tenant.id" not in response["baggage"]
        assert "feature=blue" in response["baggage"]  # only identity is removed


SyncChannel = Callable[[str], grpc.Channel]


def _manual(target: str) -> grpc.Channel:
    return grpc.intercept_channel(grpc.insecure_channel(target), oi_grpc.client_interceptor(target))


def _run_sync(make_channel: SyncChannel, shape: str, tracer: Tracer) -> None:
    server_interceptors = [oi_grpc.server_interceptor()]
    with (
        sync_server(server_interceptors, ALLOWED) as a,
        sync_server(server_interceptors, OUTSIDE) as b,
    ):
        with make_channel(a) as to_a, make_channel(b) as to_b:
            with tracer.start_as_current_span("caller"), _identity_and_other_baggage():
                allowed = call(to_a, shape)
                outside = call(to_b, shape)
    _assert_split(allowed, outside)


@pytest.mark.parametrize("shape", SHAPES)
def test_sync_interceptor_sends_identity_only_inside_the_allow_list(
    spans: InMemorySpanExporter, tracer: Tracer, shape: str
) -> None:
    _run_sync(_manual, shape, tracer)
    assert stripped_addresses(spans) == [OUTSIDE]


@pytest.mark.parametrize("opentelemetry_first", [True, False], ids=["otel-first", "ours-first"])
@pytest.mark.parametrize("shape", SHAPES)
def test_sync_instrumented_channels_strip_identity_whatever_the_load_order(
    spans: InMemorySpanExporter, tracer: Tracer, shape: str, opentelemetry_first: bool
) -> None:
    # OpenTelemetry's client interceptor injects all baggage too; whichever of the two ends
    # up nearer the wire, the outside server must not receive identity.
    instrumentors: list[Any] = [otel_grpc.GrpcInstrumentorClient(), GrpcIdentityInstrumentor()]
    for instrumentor in instrumentors if opentelemetry_first else reversed(instrumentors):
        instrumentor.instrument()
    _run_sync(grpc.insecure_channel, shape, tracer)
    assert stripped_addresses(spans) == [OUTSIDE]


AioChannel = Callable[[str], grpc.aio.Channel]


@contextlib.asynccontextmanager
async def _aio_servers() -> AsyncIterator[tuple[str, str]]:
    async with aio_server([oi_grpc.aio_server_interceptor()], ALLOWED) as a:
        async with aio_server([oi_grpc.aio_server_interceptor()], OUTSIDE) as b:
            yield a, b


def _run_aio(make_channel: AioChannel, shape: str, tracer: Tracer) -> None:
    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with _aio_servers() as (a, b):
            async with make_channel(a) as to_a, make_channel(b) as to_b:
                with tracer.start_as_current_span("caller"), _identity_and_other_baggage():
                    return await aio_call(to_a, shape), await aio_call(to_b, shape)

    _assert_split(*asyncio.run(scenario()))


@pytest.mark.parametrize("shape", SHAPES)
def test_aio_interceptors_send_identity_only_inside_the_allow_list(
    spans: InMemorySpanExporter, tracer: Tracer, shape: str
) -> None:
    def manual(target: str) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(
            target, interceptors=oi_grpc.aio_client_interceptors(target)
        )

    _run_aio(manual, shape, tracer)
    assert stripped_addresses(spans) == [OUTSIDE]


@pytest.mark.parametrize("opentelemetry_first", [True, False], ids=["otel-first", "ours-first"])
@pytest.mark.parametrize("shape", SHAPES)
def test_aio_instrumented_channels_strip_identity_whatever_the_load_order(
    spans: InMemorySpanExporter, tracer: Tracer, shape: str, opentelemetry_first: bool
) -> None:
    instrumentors: list[Any] = [otel_grpc.GrpcAioInstrumentorClient(), GrpcIdentityInstrumentor()]
    for instrumentor in instrumentors if opentelemetry_first else reversed(instrumentors):
        instrumentor.instrument()
    _run_aio(grpc.aio.insecure_channel, shape, tracer)
    assert stripped_addresses(spans) == [OUTSIDE]


def test_aio_interceptor_placed_outside_opentelemetrys_still_strips(tracer: Tracer) -> None:
    # By hand, in the "wrong" order: ours first, OpenTelemetry's nearer the wire.
    def outer(target: str) -> grpc.aio.Channel:
        interceptors = [
            *oi_grpc.aio_client_interceptors(target),
            *otel_grpc.aio_client_interceptors(),
        ]
        return grpc.aio.insecure_channel(target, interceptors=interceptors)

    _run_aio(outer, "UnaryUnary", tracer)


def test_metadata_the_caller_sent_is_kept_and_its_identity_filtered(tracer: Tracer) -> None:
    with sync_server([oi_grpc.server_interceptor()], OUTSIDE) as b, _manual(b) as channel:
        with _identity_and_other_baggage():
            sent = [("x-request-id", "r-1"), ["baggage", "user.id=forged"]]
            response = call(channel, "UnaryUnary", metadata=sent)[0]
    assert "user.id" not in response["baggage"]


def test_without_a_target_the_interceptor_applies_no_egress_filter() -> None:
    with sync_server([oi_grpc.server_interceptor()], OUTSIDE) as b:
        channel = grpc.intercept_channel(grpc.insecure_channel(b), oi_grpc.client_interceptor())
        with channel, oi.use_identity(user_id="u-1", tenant_id="acme"):
            assert call(channel, "UnaryUnary")[0]["user"] == "u-1"


def test_aio_interceptors_nested_in_a_list_by_mistake_fail_at_channel_creation() -> None:
    """Nested, the list could serve one call shape at most (grpc.aio files each interceptor
    object under one shape): the channel is refused, with what to write instead, rather than
    carrying identity on unary calls and silently not on streams."""

    async def scenario() -> str:
        async with _aio_servers() as (a, _b):
            with pytest.raises(ValueError, match="aio_client_interceptors") as refused:
                grpc.aio.insecure_channel(a, interceptors=[oi_grpc.aio_client_interceptors(a)])
            return str(refused.value)

    message = asyncio.run(scenario())
    assert "pass it as it is, interceptors=aio_client_interceptors(target)" in message
    assert "interceptors=[*aio_client_interceptors(target), ...]" in message


@pytest.mark.parametrize("shape", SHAPES)
def test_the_old_singular_name_still_works_and_says_it_is_deprecated(
    spans: InMemorySpanExporter, tracer: Tracer, shape: str
) -> None:
    def old(target: str) -> grpc.aio.Channel:
        with pytest.warns(DeprecationWarning, match="use aio_client_interceptors"):
            interceptors = oi_grpc.aio_client_interceptor(target)
        return grpc.aio.insecure_channel(target, interceptors=interceptors)

    _run_aio(old, shape, tracer)
    assert stripped_addresses(spans) == [OUTSIDE]
