"""Kafka against librdkafka's in-process mock cluster (a real Kafka protocol endpoint)."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka import TopicPartition
from opentelemetry import trace
from opentelemetry.instrumentation.confluent_kafka import ConfluentKafkaInstrumentor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otel_identity_kafka import (
    KafkaIdentityInstrumentor,
    continue_message,
    identity_headers,
    message_handler,
    message_headers,
)
from wrapt import BaseObjectProxy

import otel_identity as oi
from otel_identity import names

ALICE = oi.Identity(user_id="alice", tenant_id="acme")
BOB = oi.Identity(user_id="bob", tenant_id="globex")


@pytest.fixture(scope="module")
def bootstrap() -> Iterator[str]:
    # The mock cluster lives as long as the client that created it.
    anchor = confluent_kafka.cimpl.Producer({"test.mock.num.brokers": 1, "log_level": 3})
    metadata = anchor.list_topics(timeout=10)
    yield ",".join(f"{b.host}:{b.port}" for b in metadata.brokers.values())
    anchor.flush(1)


@pytest.fixture
def topic() -> str:
    return f"oi-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def instrumented() -> Iterator[None]:
    KafkaIdentityInstrumentor().instrument()
    yield
    KafkaIdentityInstrumentor().uninstrument()


def produce(bootstrap: str, topic: str, identities: list[oi.Identity | None]) -> None:
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "log_level": 3})
    for i, identity in enumerate(identities):
        with oi.use_identity(identity):
            producer.produce(topic, value=str(i).encode(), partition=0)
    assert producer.flush(10) == 0


def consumer_for(bootstrap: str, topic: str) -> Any:
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "oi-tests",
            "enable.auto.commit": False,
            "log_level": 3,
        }
    )
    # assign, not subscribe: no group join, so no multi-second rebalance wait
    consumer.assign([TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)])
    return consumer


def poll_n(consumer: Any, n: int, handle: Any) -> None:
    deadline = time.monotonic() + 20
    done = 0
    while done < n and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is None or msg.error() is not None:
            continue
        done += 1
        handle(msg)
    assert done == n


def missing_spans(spans: InMemorySpanExporter) -> list[str]:
    return [
        s.name
        for s in spans.get_finished_spans()
        if any(e.name == names.EVENT_MISSING for e in s.events)
    ]


@pytest.mark.usefixtures("instrumented")
class TestConfluentPollLoop:
    def test_each_polled_message_runs_under_its_own_identity_or_none(
        self, bootstrap: str, topic: str, spans: InMemorySpanExporter, tracer: trace.Tracer
    ) -> None:
        sent = [ALICE, None, BOB, BOB, None, ALICE]
        produce(bootstrap, topic, sent)
        consumer = consumer_for(bootstrap, topic)
        seen: list[oi.Identity | None] = []

        def handle(msg: Any) -> None:
            with tracer.start_as_current_span(f"handle {msg.value().decode()}"):
                seen.append(oi.get_identity())

        try:
            with oi.use_identity(user_id="stale-consumer-thread"):
                poll_n(consumer, len(sent), handle)
        finally:
            consumer.close()
        assert seen == sent
        assert oi.get_identity() is None
        assert sorted(missing_spans(spans)) == ["handle 1", "handle 4"]

    def test_a_handler_that_raises_does_not_leak_into_the_next_message(
        self, bootstrap: str, topic: str
    ) -> None:
        produce(bootstrap, topic, [ALICE, None])
        consumer = consumer_for(bootstrap, topic)
        seen: list[oi.Identity | None] = []

        def handle(msg: Any) -> None:
            seen.append(oi.get_identity())
            if msg.value() == b"0":
                raise RuntimeError("handler failed")

        try:
            deadline = time.monotonic() + 20
            while len(seen) < 2 and time.monotonic() < deadline:
                msg = consumer.poll(0.2)
                if msg is None or msg.error() is not None:
                    continue
                with contextlib.suppress(RuntimeError):
                    handle(msg)
            # The last message's context holds until the next poll or close.
            assert consumer.poll(0.1) is None
            assert oi.get_identity() is None
        finally:
            consumer.close()
        assert seen == [ALICE, None]

    def test_close_ends_the_last_messages_identity(self, bootstrap: str, topic: str) -> None:
        produce(bootstrap, topic, [ALICE])
        consumer = consumer_for(bootstrap, topic)
        poll_n(consumer, 1, lambda msg: None)
        assert oi.get_identity() == ALICE
        consumer.close()
        assert oi.get_identity() is None

    def test_user_headers_are_kept_and_not_mutated(self, bootstrap: str, topic: str) -> None:
        mine = [("x-app", b"1")]
        producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "log_level": 3})
        with oi.use_identity(ALICE):
            producer.produce(topic, b"0", headers=mine, partition=0)
            producer.produce(topic, b"1", None, 0, None, None, 0, {"x-app": "2"})
        producer.flush(10)
        assert mine == [("x-app", b"1")]
        consumer = consumer_for(bootstrap, topic)
        got: list[Any] = []
        poll_n(
            consumer,
            2,
            lambda m: got.append((dict(message_headers(m))["x-app"], oi.get_identity())),
        )
        consumer.close()
        assert got == [(b"1", ALICE), (b"2", ALICE)]


@pytest.mark.usefixtures("instrumented")
@pytest.mark.parametrize("otel_first", [True, False])
def test_coexists_with_opentelemetry_confluent_kafka_in_either_order(
    bootstrap: str, topic: str, otel_first: bool, spans: InMemorySpanExporter
) -> None:
    KafkaIdentityInstrumentor().uninstrument()
    order = (
        [ConfluentKafkaInstrumentor(), KafkaIdentityInstrumentor()]
        if otel_first
        else [KafkaIdentityInstrumentor(), ConfluentKafkaInstrumentor()]
    )
    for instrumentor in order:
        instrumentor.instrument()
    try:
        produce(bootstrap, topic, [ALICE, None])
        consumer = consumer_for(bootstrap, topic)
        seen: list[Any] = []
        poll_n(
            consumer,
            2,
            lambda m: seen.append((oi.get_identity(), trace.get_current_span().is_recording())),
        )
        consumer.close()
    finally:
        ConfluentKafkaInstrumentor().uninstrument()
    # Identity is current inside OpenTelemetry's consumer span, which is kept as the hop span.
    assert seen == [(ALICE, True), (None, True)]
    assert oi.get_identity() is None
    recv = [s for s in spans.get_finished_spans() if s.kind is trace.SpanKind.CONSUMER]
    assert any(e.name == names.EVENT_MISSING for s in recv for e in s.events)


class TestExplicitHelpers:
    def test_continue_message_and_handler_decorator_with_plain_clients(
        self, bootstrap: str, topic: str
    ) -> None:
        producer = confluent_kafka.cimpl.Producer({"bootstrap.servers": bootstrap, "log_level": 3})
        with oi.use_identity(ALICE):
            producer.produce(topic, b"0", headers=identity_headers({"x-app": b"1"}), partition=0)
        producer.produce(topic, b"1", headers=identity_headers(), partition=0)
        producer.flush(10)
        consumer = confluent_kafka.cimpl.Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "g", "log_level": 3}
        )
        consumer.assign([TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)])
        batch: list[Any] = []
        deadline = time.monotonic() + 20
        while len(batch) < 2 and time.monotonic() < deadline:
            batch += [m for m in consumer.consume(2, 0.5) if m.error() is None]
        consumer.close()
        assert oi.get_identity() is None  # an uninstrumented poll sets nothing

        seen = []
        for msg in batch:
            with continue_message(msg) as identity:
                seen.append((identity, oi.get_identity()))
        assert seen == [(ALICE, ALICE), (None, None)]

        @message_handler
        def handle(msg: Any) -> oi.Identity | None:
            return oi.get_identity()

        class Handler:
            @message_handler
            def __call__(self, msg: Any) -> oi.Identity | None:
                return oi.get_identity()

        assert [handle(m) for m in batch] == [ALICE, None]
        assert [Handler()(m) for m in batch] == [ALICE, None]

    def test_async_handler_decorator(self) -> None:
        import asyncio

        with oi.use_identity(BOB):
            headers = identity_headers()

        class Msg:
            topic = "t"

            def __init__(self, headers: Any) -> None:
                self.headers = headers

        @message_handler
        async def handle(msg: Any) -> oi.Identity | None:
            await asyncio.sleep(0)
            return oi.get_identity()

        assert asyncio.run(handle(Msg(headers))) == BOB
        assert asyncio.run(handle(Msg(None))) is None

    @pytest.mark.parametrize(
        "headers",
        [
            [("baggage", b"\xff\xfe\x00user.id=x"), ("traceparent", b"\x00" * 60)],
            [("baggage", None), (None, b"x"), ("baggage",)],
            [(b"BAGGAGE", b"user.id=" + b"a" * 10_000)],
            {"baggage": 12, "traceparent": ["x", b"\xff"]},
        ],
    )
    def test_hostile_headers_never_raise(self, headers: Any) -> None:
        class Msg:
            def topic(self) -> str:
                return "t"

            def headers(self) -> Any:
                return headers

        with continue_message(Msg()) as identity:
            assert identity is None

    def test_a_message_object_that_raises_is_logged_not_raised(self, caplog: Any) -> None:
        class Broken:
            def headers(self) -> Any:
                raise OSError("gone")

            topic = "t"

        from otel_identity_kafka._helpers import message_context

        import otel_identity._telemetry as telemetry

        # log_internal_error would fail the test (conftest); count its calls instead.

        calls: list[str] = []
        original = telemetry.log_internal_error
        telemetry.log_internal_error = calls.append  # type: ignore[assignment]
        try:
            ctx = message_context(Broken())
        finally:
            telemetry.log_internal_error = original  # type: ignore[assignment]
        assert oi.get_identity(ctx) is None
        assert calls == ["kafka message_context"]


class TestKafkaPython:
    def test_kafka_python_producer_and_iterating_consumer(
        self, bootstrap: str, topic: str, instrumented: None
    ) -> None:
        from kafka import KafkaConsumer, KafkaProducer
        from kafka import TopicPartition as KTopicPartition

        producer = KafkaProducer(bootstrap_servers=bootstrap, api_version=(2, 5, 0))
        for identity in (ALICE, None, BOB):
            with oi.use_identity(identity):
                producer.send(topic, b"v", headers=[("x-app", b"1")], partition=0).get(timeout=10)
        producer.close(5)
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, api_version=(2, 5, 0), consumer_timeout_ms=8000
        )
        consumer.assign([KTopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        seen = []
        for _record in consumer:
            seen.append(oi.get_identity())
            if len(seen) == 3:
                break
        consumer.close()
        assert seen == [ALICE, None, BOB]
        assert oi.get_identity() is None


class TestInstrumentor:
    def test_double_instrument_wraps_once_and_uninstrument_restores(self) -> None:
        import kafka.producer.kafka

        original = confluent_kafka.Producer
        KafkaIdentityInstrumentor().instrument()
        KafkaIdentityInstrumentor().instrument()
        try:
            assert confluent_kafka.Producer is not original
            send = kafka.producer.kafka.KafkaProducer.__dict__["send"]
            assert isinstance(send, BaseObjectProxy)
            assert not isinstance(send.__wrapped__, BaseObjectProxy)
        finally:
            KafkaIdentityInstrumentor().uninstrument()
        assert confluent_kafka.Producer is original
        assert not isinstance(kafka.producer.kafka.KafkaProducer.__dict__["send"], BaseObjectProxy)

    def test_uninstrumented_producer_sends_no_identity(self, bootstrap: str, topic: str) -> None:
        KafkaIdentityInstrumentor().instrument()
        KafkaIdentityInstrumentor().uninstrument()
        produce(bootstrap, topic, [ALICE])
        consumer = consumer_for(bootstrap, topic)
        seen: list[Any] = []
        poll_n(consumer, 1, lambda m: seen.append(message_headers(m)))
        consumer.close()
        assert seen == [None]
