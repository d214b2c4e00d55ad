"""A tiny gRPC service for the tests: every call shape answers with what the handler saw.

Generic handlers with bytes in and out, so no generated code is needed. Each response is a
JSON object: the identity the handler saw when it produced that response, and the raw
``baggage`` metadata the server received (to prove what crossed the wire).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent import futures
from typing import Any

import grpc
import grpc.aio
from opentelemetry import baggage, trace

import otel_identity as oi
from otel_identity import instrumentation as oii
from otel_identity import names

SERVICE = "test.Echo"
SHAPES = ("UnaryUnary", "UnaryStream", "StreamUnary", "StreamStream")
HEALTH = f"/{SERVICE}/Health"
STREAM_LENGTH = 3
_PATCHED = [
    (grpc, "server"),
    (grpc, "insecure_channel"),
    (grpc, "secure_channel"),
    (grpc.aio, "server"),
    (grpc.aio, "insecure_channel"),
    (grpc.aio, "secure_channel"),
]
# What instrumentors patch, as grpc has it: tests put these back after each test.
ORIGINALS = {(module, name): getattr(module, name) for module, name in _PATCHED}
# opentelemetry-instrumentation-grpc is untyped; reach it through one Any-typed name.
otel_grpc: Any = importlib.import_module("opentelemetry.instrumentation.grpc")
# Above grpc's default 8 KiB (whose "soft" limit rejects at random): the hostile-input tests
# send baggage over the W3C limit, which otel-identity, not grpc, must handle.
SERVER_OPTIONS = [("grpc.max_metadata_size", 64 * 1024)]


def method(shape: str) -> str:
    return f"/{SERVICE}/{shape}"


def observed(servicer_context: Any) -> bytes:
    # A span per response: the hop's pending events (no OpenTelemetry server span) land on
    # the first one, and a duplicate would show on the others.
    in_otel_pass = decided_in_opentelemetrys_pass()
    with trace.get_tracer("tests.grpc.echo").start_as_current_span("echo.respond"):
        identity = oi.get_identity()
        received = [v for k, v in servicer_context.invocation_metadata() if k == "baggage"]
        return json.dumps(
            {
                "user": identity.user_id if identity else None,
                "tenant": identity.tenant_id if identity else None,
                "baggage": received[0] if received else None,
                "members": dict(baggage.get_all()),
                "in_otel_pass": in_otel_pass,
            }
        ).encode()


def decided_in_opentelemetrys_pass() -> bool:
    """Whether the current gRPC server hop was decided in OpenTelemetry's own extract."""
    marker = oii.announced(names.HOP_GRPC_SERVER)
    return marker is not None and marker.decided(oii.current_context())


def _unary_unary(request: bytes, context: Any) -> bytes:
    return observed(context)


def _unary_stream(request: bytes, context: Any) -> Iterator[bytes]:
    for _ in range(STREAM_LENGTH):
        yield observed(context)


def _stream_unary(requests: Iterator[bytes], context: Any) -> bytes:
    for _ in requests:
        pass
    return observed(context)


def _stream_stream(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
    for _ in requests:
        yield observed(context)


async def _aio_unary_unary(request: bytes, context: Any) -> bytes:
    await asyncio.sleep(0)
    return observed(context)


async def _aio_unary_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    for _ in range(STREAM_LENGTH):
        await asyncio.sleep(0)
        yield observed(context)


async def _aio_stream_unary(requests: AsyncIterator[bytes], context: Any) -> bytes:
    async for _ in requests:
        pass
    return observed(context)


async def _aio_stream_stream(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for _ in requests:
        await asyncio.sleep(0)
        yield observed(context)


async def _aio_unary_stream_write(request: bytes, context: Any) -> None:
    # The other asyncio streaming style: a coroutine that writes its responses.
    for _ in range(STREAM_LENGTH):
        await context.write(observed(context))


def handler(aio: bool = False) -> grpc.GenericRpcHandler:
    behaviors: tuple[Callable[..., Any], ...] = (
        (_aio_unary_unary, _aio_unary_stream, _aio_stream_unary, _aio_stream_stream)
        if aio
        else (_unary_unary, _unary_stream, _stream_unary, _stream_stream)
    )
    uu, us, su, ss = behaviors
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "UnaryUnary": grpc.unary_unary_rpc_method_handler(uu),
            "UnaryStream": grpc.unary_stream_rpc_method_handler(us),
            "StreamUnary": grpc.stream_unary_rpc_method_handler(su),
            "StreamStream": grpc.stream_stream_rpc_method_handler(ss),
            "Health": grpc.unary_unary_rpc_method_handler(uu),
            "UnaryStreamWrite": grpc.unary_stream_rpc_method_handler(
                _aio_unary_stream_write if aio else us
            ),
        },
    )


@contextlib.contextmanager
def sync_server(interceptors: Sequence[Any] = (), host: str = "127.0.0.1") -> Iterator[str]:
    """A started sync server; yields its target ``host:port``."""
    pool = futures.ThreadPoolExecutor(max_workers=4)
    server = grpc.server(
        pool, handlers=[handler()], interceptors=list(interceptors), options=SERVER_OPTIONS
    )
    port = server.add_insecure_port(f"{host}:0")
    server.start()
    try:
        yield f"{host}:{port}"
    finally:
        server.stop(grace=None).wait(5)
        pool.shutdown(wait=False)


@contextlib.asynccontextmanager
async def aio_server(
    interceptors: Sequence[Any] = (), host: str = "127.0.0.1"
) -> AsyncIterator[str]:
    server = grpc.aio.server(
        handlers=[handler(aio=True)], interceptors=list(interceptors), options=SERVER_OPTIONS
    )
    port = server.add_insecure_port(f"{host}:0")
    await server.start()
    try:
        yield f"{host}:{port}"
    finally:
        await server.stop(grace=None)


def call(
    channel: grpc.Channel, shape: str, metadata: Sequence[Any] | None = None
) -> list[dict[str, Any]]:
    """Make one call of ``shape``; the decoded responses (one for unary responses)."""
    name = method(shape)
    requests = [b"a", b"b", b"c"]
    if shape == "UnaryUnary":
        result = [channel.unary_unary(name)(b"x", metadata=metadata, timeout=10)]
    elif shape == "UnaryStream":
        result = list(channel.unary_stream(name)(b"x", metadata=metadata, timeout=10))
    elif shape == "StreamUnary":
        result = [channel.stream_unary(name)(iter(requests), metadata=metadata, timeout=10)]
    else:
        result = list(channel.stream_stream(name)(iter(requests), metadata=metadata, timeout=10))
    return [json.loads(item) for item in result]


async def _requests() -> AsyncIterator[bytes]:
    for item in (b"a", b"b", b"c"):
        yield item


async def aio_call(
    channel: grpc.aio.Channel, shape: str, metadata: Sequence[Any] | None = None
) -> list[dict[str, Any]]:
    name = method(shape)
    md = grpc.aio.Metadata(*metadata) if metadata else None
    if shape == "UnaryUnary":
        result = [await channel.unary_unary(name)(b"x", metadata=md, timeout=10)]
    elif shape == "UnaryStream":
        result = [r async for r in channel.unary_stream(name)(b"x", metadata=md, timeout=10)]
    elif shape == "StreamUnary":
        result = [await channel.stream_unary(name)(_requests(), metadata=md, timeout=10)]
    else:
        result = [
            r async for r in channel.stream_stream(name)(_requests(), metadata=md, timeout=10)
        ]
    return [json.loads(item) for item in result]
