"""Server side: identity in every handler and stream step, hop accounting, hostile input."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import grpc.aio
import otel_identity_grpc as oi_grpc
import pytest
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from otel_identity_grpc import _server

import otel_identity as oi
from otel_identity import _telemetry, names

from .otel_identity_grpc_echo import (
    HEALTH,
    SHAPES,
    STREAM_LENGTH,
    aio_call,
    aio_server,
    call,
    method,
    otel_grpc,
    sync_server,
)


def _expected_count(shape: str) -> int:
    return STREAM_LENGTH if shape.endswith("Stream") else 1


def _missing_events(spans: InMemorySpanExporter) -> list[tuple[str, Any]]:
    return [
        (span.name, span.kind)
        for span in spans.get_finished_spans()
        for event in span.events
        if event.name == names.EVENT_MISSING
    ]


def _grpc_server_hops() -> dict[str, int]:
    return {o: n for (h, o), n in _telemetry.hop_counts().items() if h == names.HOP_GRPC_SERVER}


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {
        k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)
    }


# -- identity reaches the handler, for every call shape -------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_sync_handler_and_every_stream_step_see_the_callers_identity(shape: str) -> None:
    with sync_server([oi_grpc.server_interceptor()]) as target:
        channel = grpc.intercept_channel(
            grpc.insecure_channel(target), oi_grpc.client_interceptor(target)
        )
        with channel, oi.use_identity(user_id="u-1", tenant_id="acme"):
            responses = call(channel, shape)
    assert len(responses) == _expected_count(shape)
    assert all(r["user"] == "u-1" and r["tenant"] == "acme" for r in responses), responses


@pytest.mark.parametrize("shape", SHAPES)
def test_aio_handler_and_every_stream_step_see_the_callers_identity(shape: str) -> None:
    async def scenario() -> list[dict[str, Any]]:
        async with aio_server([oi_grpc.aio_server_interceptor()]) as target:
            interceptors = oi_grpc.aio_client_interceptors(target)
            async with grpc.aio.insecure_channel(target, interceptors=interceptors) as channel:
                with oi.use_identity(user_id="u-2", tenant_id="beta"):
                    return await aio_call(channel, shape)

    responses = asyncio.run(scenario())
    assert len(responses) == _expected_count(shape)
    assert all(r["user"] == "u-2" and r["tenant"] == "beta" for r in responses), responses


def test_aio_stream_written_with_context_write_sees_the_identity() -> None:
    async def scenario() -> list[dict[str, Any]]:
        async with aio_server([oi_grpc.aio_server_interceptor()]) as target:
            interceptors = oi_grpc.aio_client_interceptors(target)
            async with grpc.aio.insecure_channel(target, interceptors=interceptors) as channel:
                with oi.use_identity(user_id="u-2", tenant_id="beta"):
                    call = channel.unary_stream(method("UnaryStreamWrite"))(b"x", timeout=10)
                    return [json.loads(r) async for r in call]

    responses = asyncio.run(scenario())
    assert len(responses) == STREAM_LENGTH
    assert all(r["user"] == "u-2" for r in responses)


def test_without_the_server_interceptor_the_handler_sees_no_identity() -> None:
    # The control for the tests above: the identity comes from the interceptor, not from
    # anything ambient in the test process.
    with sync_server() as target:
        channel = grpc.intercept_channel(
            grpc.insecure_channel(target), oi_grpc.client_interceptor(target)
        )
        with channel, oi.use_identity(user_id="u-1", tenant_id="acme"):
            responses = call(channel, "UnaryStream")
    assert all(r["user"] is None for r in responses)
    assert all("user.id=u-1" in r["baggage"] for r in responses)


def test_stream_steps_do_not_leak_the_hop_context_into_the_consumer() -> None:
    ctx = oi.set_identity(user_id="u-3", tenant_id="acme")
    seen: list[object] = []

    def responses() -> Any:
        for _ in range(2):
            seen.append(oi.get_identity())
            yield b"r"

    stream = _server._IterateInContext(ctx, responses())
    for _ in stream:
        seen.append(oi.get_identity())  # what grpc's thread sees between steps
    assert [getattr(s, "user_id", None) for s in seen] == ["u-3", None, "u-3", None]


# -- identity.missing: recorded on the server span, exactly once ---------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_sync_missing_identity_is_recorded_once_on_the_opentelemetry_server_span(
    spans: InMemorySpanExporter, shape: str
) -> None:
    with sync_server([otel_grpc.server_interceptor(), oi_grpc.server_interceptor()]) as target:
        with grpc.insecure_channel(target) as channel:
            call(channel, shape)
    assert _missing_events(spans) == [(method(shape), SpanKind.SERVER)]


@pytest.mark.parametrize("shape", SHAPES)
def test_aio_missing_identity_is_recorded_once_on_the_opentelemetry_server_span(
    spans: InMemorySpanExporter, shape: str
) -> None:
    async def scenario() -> None:
        async with aio_server(
            [otel_grpc.aio_server_interceptor(), oi_grpc.aio_server_interceptor()]
        ) as target:
            async with grpc.aio.insecure_channel(target) as channel:
                await aio_call(channel, shape)

    asyncio.run(scenario())
    assert _missing_events(spans) == [(method(shape), SpanKind.SERVER)]


def test_missing_identity_without_opentelemetry_lands_once_on_the_handlers_first_span(
    spans: InMemorySpanExporter,
) -> None:
    before = _grpc_server_hops()
    with sync_server([oi_grpc.server_interceptor()]) as target:
        with grpc.insecure_channel(target) as channel:
            call(channel, "UnaryStream")
    assert _missing_events(spans) == [("echo.respond", SpanKind.INTERNAL)]
    assert _delta(before, _grpc_server_hops()) == {names.OUTCOME_MISSING: 1}


def test_present_identity_is_stamped_on_the_opentelemetry_server_span(
    spans: InMemorySpanExporter,
) -> None:
    with sync_server([otel_grpc.server_interceptor(), oi_grpc.server_interceptor()]) as target:
        channel = grpc.intercept_channel(
            grpc.insecure_channel(target), oi_grpc.client_interceptor(target)
        )
        with channel, oi.use_identity(user_id="u-1", tenant_id="acme"):
            call(channel, "UnaryUnary")
    server = next(s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER)
    handler = next(s for s in spans.get_finished_spans() if s.name == "echo.respond")
    assert server.attributes is not None and server.attributes[names.USER_ID] == "u-1"
    # The OpenTelemetry server span stays the hop's span: the handler's span is its child.
    assert handler.parent is not None and handler.parent.span_id == server.context.span_id
    assert _missing_events(spans) == []


@pytest.mark.parametrize("aio", [False, True])
def test_anonymous_methods_are_exempt_from_identity_missing(
    spans: InMemorySpanExporter, aio: bool
) -> None:
    oi.configure(anonymous_routes=HEALTH)
    before = _grpc_server_hops()
    if aio:

        async def scenario() -> None:
            interceptors = [otel_grpc.aio_server_interceptor(), oi_grpc.aio_server_interceptor()]
            async with aio_server(interceptors) as target:
                async with grpc.aio.insecure_channel(target) as channel:
                    await channel.unary_unary(HEALTH)(b"x", timeout=10)

        asyncio.run(scenario())
    else:
        with sync_server([otel_grpc.server_interceptor(), oi_grpc.server_interceptor()]) as target:
            with grpc.insecure_channel(target) as channel:
                channel.unary_unary(HEALTH)(b"x", timeout=10)
    assert _missing_events(spans) == []
    assert _delta(before, _grpc_server_hops()) == {names.OUTCOME_ANONYMOUS: 1}


# -- hostile metadata never breaks an RPC --------------------------------------------------

HOSTILE: dict[str, list[tuple[str, Any]]] = {
    "garbage baggage": [("baggage", "%%%;;;,,,===;=,%zz")],
    "too many members": [("baggage", ",".join(f"k{i}=v" for i in range(300)))],
    "oversize": [("baggage", "user.id=" + "x" * 9000 + ",tenant.id=acme")],
    "control characters": [("baggage", "user.id=%0Aroot%00,tenant.id=%7F")],
    "two baggage headers": [("baggage", "user.id=a"), ("baggage", "tenant.id=b")],
    "bad traceparent": [("traceparent", "00-zz-zz-01"), ("tracestate", "=,=,=")],
    "binary headers": [("baggage-bin", b"\xff\x00\xfe"), ("traceparent-bin", b"\x00")],
    "empty values": [("baggage", ""), ("traceparent", "")],
}


@pytest.mark.parametrize("metadata", HOSTILE.values(), ids=list(HOSTILE))
def test_hostile_metadata_never_breaks_the_call(metadata: list[tuple[str, Any]]) -> None:
    with sync_server([oi_grpc.server_interceptor()]) as target:
        with grpc.insecure_channel(target) as channel:
            for shape in ("UnaryUnary", "StreamStream"):
                responses = call(channel, shape, metadata=metadata)
                assert len(responses) == _expected_count(shape)

    async def scenario() -> None:
        async with aio_server([oi_grpc.aio_server_interceptor()]) as target:
            async with grpc.aio.insecure_channel(target) as channel:
                for shape in ("UnaryUnary", "UnaryStream"):
                    assert len(await aio_call(channel, shape, metadata)) == _expected_count(shape)

    asyncio.run(scenario())


def test_control_characters_in_identity_are_rejected_not_admitted(
    spans: InMemorySpanExporter,
) -> None:
    with sync_server([oi_grpc.server_interceptor()]) as target:
        with grpc.insecure_channel(target) as channel:
            responses = call(channel, "UnaryUnary", metadata=HOSTILE["control characters"])
    assert responses[0]["user"] is None
    events = [e for s in spans.get_finished_spans() for e in s.events]
    assert [
        (e.attributes or {})[names.ATTR_REJECT_REASON]
        for e in events
        if e.name == names.EVENT_REJECTED
    ] == [names.REASON_MALFORMED]


class _OddDetails:
    method = b"/test.Echo/UnaryUnary"


class _OddServicerContext:
    @staticmethod
    def invocation_metadata() -> Any:
        return (None, 42, ("baggage",), (b"baggage", "user.id=x"), ("baggage", 7), ["baggage"])


def test_handler_wrapping_tolerates_odd_call_details_and_handlers() -> None:
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: oi.get_identity())
    wrapped = _server.wrap_handler(handler, _OddDetails())
    assert wrapped.unary_unary(b"x", _OddServicerContext()) is None
    assert wrapped.unary_unary(b"x", None) is None
    assert _server.wrap_handler(None, _OddDetails()) is None
    no_behavior = handler._replace(unary_unary=None)
    assert _server.wrap_handler(no_behavior, _OddDetails()) is no_behavior


def test_wrapped_handlers_are_built_once_per_handler_and_method() -> None:
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: b"")
    first = _server.wrap_handler(handler, _OddDetails())
    assert _server.wrap_handler(handler, _OddDetails()) is first
    other = _server.wrap_handler(handler._replace(), _OddDetails())
    assert other is not first


def test_several_servers_of_one_method_keep_their_wrapped_handlers() -> None:
    """Each server (or generic handler) has its own handler for a method: calls that take turns
    between them find theirs wrapped already, instead of wrapping anew on every call."""
    handlers = [grpc.unary_unary_rpc_method_handler(lambda r, c: b"") for _ in range(3)]
    wrapped = [_server.wrap_handler(handler, _OddDetails()) for handler in handlers]
    for _ in range(2):
        again = [_server.wrap_handler(handler, _OddDetails()) for handler in handlers]
        assert all(a is w for a, w in zip(again, wrapped, strict=True))


def test_a_handler_looked_up_with_instrumentation_suppressed_is_left_as_it_is() -> None:
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: b"")
    interceptor = oi_grpc.server_interceptor()
    with suppress_instrumentation():
        assert interceptor.intercept_service(lambda details: handler, _OddDetails()) is handler
    assert interceptor.intercept_service(lambda details: handler, _OddDetails()) is not handler


def test_without_an_opentelemetry_server_span_the_handler_continues_the_callers_trace(
    spans: InMemorySpanExporter, tracer: Any
) -> None:
    with sync_server([oi_grpc.server_interceptor()]) as target:
        channel = grpc.intercept_channel(
            grpc.insecure_channel(target), oi_grpc.client_interceptor(target)
        )
        with channel, tracer.start_as_current_span("caller") as caller:
            call(channel, "UnaryUnary")
    handler = next(s for s in spans.get_finished_spans() if s.name == "echo.respond")
    assert handler.context.trace_id == caller.get_span_context().trace_id
    assert handler.parent is not None
    assert handler.parent.span_id == caller.get_span_context().span_id
