"""NATS (core and JetStream) on loopback through nats-py."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import nats
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otel_identity_nats import NatsIdentityInstrumentor, continue_message, message_handler
from wrapt import BaseObjectProxy

import otel_identity as oi
from otel_identity import names
from tests.services import need_service

URL = "nats://127.0.0.1:4222"
ALICE = oi.Identity(user_id="alice", tenant_id="acme")
BOB = oi.Identity(user_id="bob", tenant_id="globex")


@pytest.fixture(autouse=True)
def nats_server() -> None:
    need_service("nats", 4222)


@pytest.fixture
def instrumented() -> Iterator[None]:
    NatsIdentityInstrumentor().instrument()
    yield
    NatsIdentityInstrumentor().uninstrument()


def run(main: Callable[[Any], Awaitable[Any]]) -> Any:
    async def wrapper() -> Any:
        nc = await nats.connect(URL, connect_timeout=2, max_reconnect_attempts=0)
        try:
            return await asyncio.wait_for(main(nc), 15)
        finally:
            await nc.close()

    return asyncio.run(wrapper())


def subject() -> str:
    return f"oi.{uuid.uuid4().hex[:10]}"


@pytest.mark.usefixtures("instrumented")
class TestCore:
    def test_callbacks_run_under_each_messages_identity_not_the_subscribers(
        self, spans: InMemorySpanExporter, tracer: trace.Tracer
    ) -> None:
        async def main(nc: Any) -> list[Any]:
            seen: list[Any] = []
            done = asyncio.Event()
            name = subject()

            async def on_msg(msg: Any) -> None:
                with tracer.start_as_current_span(f"handle {msg.data.decode()}"):
                    seen.append(oi.get_identity())
                if msg.data == b"2":
                    raise RuntimeError("handler failed")  # nats-py logs it; the next one runs
                if len(seen) == 4:
                    done.set()

            # The subscription's task copies this context: its identity must never show.
            with oi.use_identity(user_id="subscriber"):
                await nc.subscribe(name, cb=on_msg)
            for i, identity in enumerate((ALICE, None, BOB, None)):
                with oi.use_identity(identity):
                    await nc.publish(name, str(i).encode())
            await done.wait()
            return seen

        assert run(main) == [ALICE, None, BOB, None]
        assert sorted(
            s.name
            for s in spans.get_finished_spans()
            for e in s.events
            if e.name == names.EVENT_MISSING
        ) == ["handle 1", "handle 3"]

    def test_request_reply_and_next_msg(self) -> None:
        async def main(nc: Any) -> tuple[Any, list[Any]]:
            name = subject()

            async def responder(msg: Any) -> None:
                identity = oi.get_identity()
                await msg.respond((identity.tenant_id if identity else "none").encode())

            await nc.subscribe(name, cb=responder)
            with oi.use_identity(ALICE):
                reply = await nc.request(name, b"?", timeout=5)

            other = subject()
            sub = await nc.subscribe(other)
            with oi.use_identity(BOB):
                await nc.publish(other, b"1", headers={"x-app": "1"})
            await nc.publish(other, b"2")
            seen = []
            msg = await sub.next_msg(timeout=5)
            seen.append((msg.headers["x-app"], oi.get_identity()))
            msg = await sub.next_msg(timeout=5)
            seen.append((msg.headers, oi.get_identity()))
            await sub.unsubscribe()
            seen.append(oi.get_identity())
            return reply.data, seen

        reply, seen = run(main)
        assert reply == b"acme"
        assert seen[0] == ("1", BOB)
        assert seen[1][1] is None
        assert seen[2] is None

    def test_hostile_headers_never_raise(self) -> None:
        async def main(nc: Any) -> list[Any]:
            name = subject()
            sub = await nc.subscribe(name)
            NatsIdentityInstrumentor().uninstrument()
            for headers in (
                {"baggage": "user.id=%ZZ%00,,,;;=", "traceparent": "zz"},
                {"Baggage": "user.id=" + "x" * 9000},
                {"baggage": "\u00ff\u00fe"},
            ):
                await nc.publish(name, b"h", headers=headers)
            NatsIdentityInstrumentor().instrument()
            seen = []
            for _ in range(3):
                await sub.next_msg(timeout=5)
                seen.append(oi.get_identity())
            return seen

        assert run(main) == [None, None, None]


@pytest.mark.usefixtures("instrumented")
def test_jetstream_publish_and_pull_fetch_with_continue_message() -> None:
    async def main(nc: Any) -> list[Any]:
        js = nc.jetstream()
        stream = f"OI{uuid.uuid4().hex[:8].upper()}"
        name = f"{stream.lower()}.orders"
        await js.add_stream(name=stream, subjects=[name])
        try:
            for identity in (ALICE, None):
                with oi.use_identity(identity):
                    await js.publish(name, b"o")
            psub = await js.pull_subscribe(name, durable="oi")
            seen = []
            for msg in await psub.fetch(2, timeout=5):
                with continue_message(msg) as identity:
                    seen.append((identity, oi.get_identity()))
                await msg.ack()
            return seen
        finally:
            await js.delete_stream(stream)

    assert run(main) == [(ALICE, ALICE), (None, None)]


def test_message_handler_decorator_without_instrumentor() -> None:
    async def main(nc: Any) -> list[Any]:
        name = subject()
        sub = await nc.subscribe(name)
        NatsIdentityInstrumentor().instrument()
        with oi.use_identity(ALICE):
            await nc.publish(name, b"1")
        NatsIdentityInstrumentor().uninstrument()
        msg = await sub.next_msg(timeout=5)
        assert oi.get_identity() is None  # next_msg is not instrumented any more

        @message_handler
        async def handle(msg: Any) -> Any:
            return oi.get_identity()

        return [await handle(msg)]

    assert run(main) == [ALICE]


def test_double_instrument_wraps_once_and_uninstrument_restores() -> None:
    from nats.aio.client import Client

    NatsIdentityInstrumentor().instrument()
    NatsIdentityInstrumentor().instrument()
    try:
        publish = Client.__dict__["publish"]
        assert isinstance(publish, BaseObjectProxy)
        assert not isinstance(publish.__wrapped__, BaseObjectProxy)
    finally:
        NatsIdentityInstrumentor().uninstrument()
    assert not isinstance(Client.__dict__["publish"], BaseObjectProxy)
