"""RabbitMQ on loopback, through pika and aio-pika."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import aio_pika
import pika
import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor
from opentelemetry.instrumentation.pika import PikaInstrumentor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otel_identity_amqp import AmqpIdentityInstrumentor, continue_message, message_handler
from wrapt import BaseObjectProxy

import otel_identity as oi
from otel_identity import names
from tests.services import need_service

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
ALICE = oi.Identity(user_id="alice", tenant_id="acme")
BOB = oi.Identity(user_id="bob", tenant_id="globex")


@pytest.fixture(autouse=True)
def rabbitmq() -> None:
    need_service("rabbitmq", 5672)


@pytest.fixture
def instrumented() -> Iterator[None]:
    AmqpIdentityInstrumentor().instrument()
    yield
    AmqpIdentityInstrumentor().uninstrument()


@pytest.fixture
def channel() -> Iterator[Any]:
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    try:
        yield connection.channel()
    finally:
        connection.close()


def new_queue(channel: Any) -> str:
    name = f"oi-{uuid.uuid4().hex[:10]}"
    channel.queue_declare(name, arguments={"x-expires": 60_000})
    return name


def publish(channel: Any, queue: str, identities: list[oi.Identity | None]) -> None:
    for i, identity in enumerate(identities):
        with oi.use_identity(identity):
            channel.basic_publish("", queue, str(i).encode())


def drain(channel: Any, queue: str, n: int, callback: Any) -> None:
    seen = 0

    def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        nonlocal seen
        seen += 1
        ch.basic_ack(method.delivery_tag)
        callback(body)

    channel.basic_consume(queue, on_message)
    deadline = 100
    while seen < n and deadline:
        deadline -= 1
        channel.connection.process_data_events(time_limit=0.1)
    assert seen == n


def events(spans: InMemorySpanExporter, name: str) -> list[str]:
    return [s.name for s in spans.get_finished_spans() for e in s.events if e.name == name]


@pytest.mark.usefixtures("instrumented")
class TestPika:
    def test_each_delivery_runs_under_its_publishers_identity(
        self, channel: Any, tracer: trace.Tracer, spans: InMemorySpanExporter
    ) -> None:
        queue = new_queue(channel)
        sent = [ALICE, None, BOB]
        publish(channel, queue, sent)
        seen: list[Any] = []

        def handle(body: bytes) -> None:
            with tracer.start_as_current_span(f"handle {body.decode()}"):
                seen.append(oi.get_identity())

        with oi.use_identity(user_id="stale-consumer"):
            drain(channel, queue, 3, handle)
        assert seen == sent
        assert events(spans, names.EVENT_MISSING) == ["handle 1"]

    def test_a_callback_that_raises_does_not_leak_into_the_next(self, channel: Any) -> None:
        queue = new_queue(channel)
        publish(channel, queue, [ALICE])
        seen: list[Any] = []

        def failing(ch: Any, method: Any, properties: Any, body: bytes) -> None:
            ch.basic_ack(method.delivery_tag)
            seen.append(oi.get_identity())
            raise RuntimeError("callback failed")

        channel.basic_consume(queue, failing)

        def consume_until_it_fails() -> None:
            for _ in range(50):
                channel.connection.process_data_events(time_limit=0.1)

        with pytest.raises(RuntimeError, match="callback failed"):
            consume_until_it_fails()
        assert seen == [ALICE]
        assert oi.get_identity() is None
        # The consumer comes back (a new channel, as after a crash) and gets the next message.
        connection = channel.connection
        channel.close()
        fresh = connection.channel()
        publish(fresh, queue, [None])
        drain(fresh, queue, 1, lambda body: seen.append(oi.get_identity()))
        assert seen == [ALICE, None]

    def test_consume_generator_runs_each_delivery_under_its_identity(self, channel: Any) -> None:
        queue = new_queue(channel)
        publish(channel, queue, [ALICE, None, BOB])
        seen: list[Any] = []
        with oi.use_identity(user_id="stale-consumer"):
            for method, _properties, _body in channel.consume(queue, inactivity_timeout=2):
                if method is None:
                    break
                channel.basic_ack(method.delivery_tag)
                seen.append(oi.get_identity())
                if len(seen) == 3:
                    break
            assert oi.get_identity() == oi.Identity(user_id="stale-consumer")
        channel.cancel()
        assert seen == [ALICE, None, BOB]
        assert oi.get_identity() is None

    def test_caller_properties_are_not_mutated(self, channel: Any) -> None:
        queue = new_queue(channel)
        shared = pika.BasicProperties(headers={"x-app": "1"})
        with oi.use_identity(ALICE):
            channel.basic_publish("", queue, b"0", shared)
            channel.basic_publish("", queue, b"1", properties=shared)
        assert shared.headers == {"x-app": "1"}
        got: list[Any] = []
        for _method, properties, _body in channel.consume(queue, inactivity_timeout=2):
            if properties is None:
                break
            with continue_message(properties, route=queue) as identity:
                got.append((properties.headers["x-app"], identity, oi.get_identity()))
            if len(got) == 2:
                break
        channel.cancel()
        assert got == [("1", ALICE, ALICE)] * 2

    @pytest.mark.parametrize("otel_first", [True, False])
    def test_coexists_with_opentelemetry_pika_in_either_order(
        self, otel_first: bool, spans: InMemorySpanExporter
    ) -> None:
        AmqpIdentityInstrumentor().uninstrument()
        order = [PikaInstrumentor(), AmqpIdentityInstrumentor()]
        for instrumentor in order if otel_first else reversed(order):
            instrumentor.instrument()
        connection = pika.BlockingConnection(pika.URLParameters(URL))
        try:
            channel = connection.channel()
            queue = new_queue(channel)
            publish(channel, queue, [ALICE, None])
            seen: list[Any] = []
            drain(channel, queue, 2, lambda body: seen.append(oi.get_identity()))
        finally:
            connection.close()
            PikaInstrumentor().uninstrument()
        assert seen == [ALICE, None]
        consumers = [s for s in spans.get_finished_spans() if s.kind is trace.SpanKind.CONSUMER]
        with_missing = [
            s for s in consumers if any(e.name == names.EVENT_MISSING for e in s.events)
        ]
        assert len(with_missing) == 1
        assert [s for s in consumers if (s.attributes or {}).get("tenant.id") == "acme"]

    def test_hostile_headers_never_raise(self, channel: Any) -> None:
        queue = new_queue(channel)
        AmqpIdentityInstrumentor().uninstrument()
        for headers in (
            {"baggage": 17, "traceparent": {"nested": ["x"]}},
            {"baggage": b"\xff\xfe user.id=x", "BAGGAGE": "user.id=%00"},
            {"baggage": "user.id=" + "a" * 20_000},
            None,
        ):
            channel.basic_publish("", queue, b"h", pika.BasicProperties(headers=headers))
        AmqpIdentityInstrumentor().instrument()
        seen: list[Any] = []
        drain(channel, queue, 4, lambda body: seen.append(oi.get_identity()))
        assert seen == [None] * 4


class TestAioPika:
    def test_consume_callback_and_iterator_run_under_each_identity(
        self, instrumented: None, spans: InMemorySpanExporter, tracer: trace.Tracer
    ) -> None:
        async def main() -> tuple[list[Any], list[Any]]:
            connection = await aio_pika.connect(URL)
            async with connection:
                channel = await connection.channel()
                queue = await channel.declare_queue(f"oi-{uuid.uuid4().hex[:8]}", exclusive=True)
                for identity in (ALICE, None, BOB):
                    with oi.use_identity(identity):
                        await channel.default_exchange.publish(aio_pika.Message(b"m"), queue.name)
                by_callback: list[Any] = []
                done = asyncio.Event()

                async def on_message(message: Any) -> None:
                    async with message.process():
                        await asyncio.sleep(0)
                        with tracer.start_as_current_span("aio handle"):
                            by_callback.append(oi.get_identity())
                    if len(by_callback) == 3:
                        done.set()

                tag = await queue.consume(on_message)
                await asyncio.wait_for(done.wait(), 10)
                await queue.cancel(tag)
                assert oi.get_identity() is None

                for identity in (BOB, None):
                    with oi.use_identity(identity):
                        await channel.default_exchange.publish(aio_pika.Message(b"i"), queue.name)
                by_iterator: list[Any] = []
                async with queue.iterator() as messages:
                    async for message in messages:
                        async with message.process():
                            by_iterator.append(oi.get_identity())
                        if len(by_iterator) == 2:
                            break
                assert oi.get_identity() is None
                return by_callback, by_iterator

        by_callback, by_iterator = asyncio.run(main())
        assert by_callback == [ALICE, None, BOB]
        assert by_iterator == [BOB, None]
        assert events(spans, names.EVENT_MISSING) == ["aio handle"]

    def test_with_opentelemetry_aio_pika_and_handler_decorator(self) -> None:
        AioPikaInstrumentor().instrument()
        AmqpIdentityInstrumentor().instrument()

        async def main() -> list[Any]:
            connection = await aio_pika.connect(URL)
            async with connection:
                channel = await connection.channel()
                queue = await channel.declare_queue(f"oi-{uuid.uuid4().hex[:8]}", exclusive=True)
                with oi.use_identity(ALICE):
                    await channel.default_exchange.publish(aio_pika.Message(b"m"), queue.name)
                AmqpIdentityInstrumentor().uninstrument()  # the decorator works on its own
                seen: list[Any] = []

                @message_handler
                async def handle(message: Any) -> None:
                    await message.ack()
                    seen.append(oi.get_identity())

                message = await queue.get(timeout=5)
                await handle(message)
                return seen

        try:
            assert asyncio.run(main()) == [ALICE]
        finally:
            AioPikaInstrumentor().uninstrument()


def test_double_instrument_wraps_once_and_uninstrument_restores() -> None:
    import aio_pika.exchange
    import pika.channel

    AmqpIdentityInstrumentor().instrument()
    AmqpIdentityInstrumentor().instrument()
    try:
        for owner, name in (
            (pika.channel.Channel, "basic_publish"),
            (aio_pika.exchange.Exchange, "publish"),
        ):
            wrapper = owner.__dict__[name]
            assert isinstance(wrapper, BaseObjectProxy)
            assert not isinstance(wrapper.__wrapped__, BaseObjectProxy)
    finally:
        AmqpIdentityInstrumentor().uninstrument()
    assert not isinstance(pika.channel.Channel.__dict__["basic_publish"], BaseObjectProxy)
    assert not isinstance(aio_pika.exchange.Exchange.__dict__["publish"], BaseObjectProxy)


def test_pika_handler_decorator_without_instrumentor(channel: Any) -> None:
    queue = new_queue(channel)
    AmqpIdentityInstrumentor().instrument()
    publish(channel, queue, [BOB])
    AmqpIdentityInstrumentor().uninstrument()
    seen: list[Any] = []

    @message_handler
    def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        seen.append(oi.get_identity())
        ch.basic_ack(method.delivery_tag)

    channel.basic_consume(queue, on_message)
    for _ in range(50):
        channel.connection.process_data_events(time_limit=0.1)
        if seen:
            break
    assert seen == [BOB]
    assert oi.get_identity() is None
