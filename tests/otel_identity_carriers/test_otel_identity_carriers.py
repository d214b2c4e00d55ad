"""Header carriers of every shape, and identity per item through in-process queues."""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_identity as oi
from otel_identity import _telemetry, names
from otel_identity._headers import (
    HeadersSetter,
    bytes_headers_setter,
    headers_getter,
    headers_setter,
    text_headers_setter,
)
from otel_identity._queues import AsyncIdentityQueue, Envelope, IdentityQueue, seal

ALICE = oi.Identity(user_id="alice", tenant_id="acme", roles=("admin",))


def sent_by(identity: oi.Identity | None, carrier: Any, setter: Any = headers_setter) -> Any:
    ctx = Context() if identity is None else oi.set_identity(identity, context=Context())
    oi.inject(carrier, setter, hop=names.HOP_QUEUE_PUBLISH, context=ctx)
    return carrier


def received(carrier: Any) -> oi.Identity | None:
    with oi.continue_from(carrier, headers_getter, hop=names.HOP_QUEUE_CONSUME) as identity:
        return identity


def missing_events(spans: InMemorySpanExporter) -> list[str]:
    return [
        str(dict(event.attributes or {}).get(names.ATTR_HOP))
        for span in spans.get_finished_spans()
        for event in span.events
        if event.name == names.EVENT_MISSING
    ]


class TestShapes:
    @pytest.mark.parametrize(
        ("carrier", "setter", "value_type"),
        [
            ({}, headers_setter, str),
            ({"x-other": b"1"}, headers_setter, bytes),
            ({}, bytes_headers_setter, bytes),
            ([], headers_setter, bytes),
            ([("x-other", "1")], headers_setter, str),
            ([], text_headers_setter, str),
        ],
        ids=["dict-str", "dict-bytes-auto", "dict-bytes", "pairs-bytes", "pairs-str", "pairs-str2"],
    )
    def test_identity_round_trips_through_every_shape(
        self, carrier: Any, setter: HeadersSetter, value_type: type
    ) -> None:
        sent_by(ALICE, carrier, setter)
        values = carrier.values() if isinstance(carrier, dict) else [v for _, v in carrier]
        assert values
        assert all(isinstance(v, value_type) for v in values if v != b"1" and v != "1")
        assert received(carrier) == ALICE

    def test_repeated_keys_first_wins_on_read(self) -> None:
        first = sent_by(ALICE, [])
        second = sent_by(oi.Identity(user_id="mallory", tenant_id="evil"), [])
        assert received(first + second) == ALICE

    def test_set_replaces_every_earlier_entry_of_the_key(self) -> None:
        carrier: list[Any] = [("baggage", b"user.id=old"), ("k", b"v"), (b"baggage", b"x=1")]
        sent_by(ALICE, carrier)
        assert [k for k, _ in carrier if k == "baggage" or k == b"baggage"] == ["baggage"]
        assert ("k", b"v") in carrier
        assert received(carrier) == ALICE

    def test_keys_are_matched_ignoring_case_when_a_broker_capitalised_them(self) -> None:
        carrier = {k.title(): v for k, v in sent_by(ALICE, {}).items()}
        assert "Baggage" in carrier
        assert received(carrier) == ALICE
        pairs = [(k.upper().encode(), v.encode()) for k, v in carrier.items()]
        assert received(pairs) == ALICE

    def test_multi_valued_mapping_values_are_read(self) -> None:
        carrier = {k: [v] for k, v in sent_by(ALICE, {}).items()}
        assert received(carrier) == ALICE

    def test_invalid_utf8_is_replaced_not_raised(self) -> None:
        carrier = [("baggage", b"user.id=\xff\xfe"), ("traceparent", b"\xc3\x28")]
        assert headers_getter.get(carrier, "baggage") == ["user.id=\ufffd\ufffd"]
        assert received(carrier) is None

    def test_immutable_carrier_is_logged_and_left_alone(self, caplog: Any) -> None:
        caplog.set_level("WARNING", logger="otel_identity")
        carrier = (("k", b"v"),)
        sent_by(ALICE, carrier)
        assert carrier == (("k", b"v"),)
        assert "cannot write headers" in caplog.text

    def test_setter_rejects_an_unknown_value_type(self) -> None:
        with pytest.raises(ValueError, match="value_type"):
            HeadersSetter("int")  # type: ignore[arg-type]

    def test_keys_lists_text_keys_of_both_shapes(self) -> None:
        assert headers_getter.keys({"a": "1", b"b": b"2"}) == ["a", "b"]
        assert headers_getter.keys([("a", b"1"), (b"b", None), "junk"]) == ["a", "b"]


_hostile_value = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.lists(st.one_of(st.text(max_size=10), st.binary(max_size=10), st.none()), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
)
_hostile_key = st.one_of(
    st.sampled_from(["baggage", "Baggage", "traceparent", "tracestate", b"baggage"]),
    st.text(max_size=10),
    st.binary(max_size=10),
    st.integers(),
    st.none(),
)
_hostile_carrier = st.one_of(
    st.dictionaries(_hostile_key, _hostile_value, max_size=5),
    st.lists(
        st.one_of(
            st.tuples(_hostile_key, _hostile_value),
            st.tuples(_hostile_key),
            st.none(),
            st.text(max_size=5),
        ),
        max_size=6,
    ),
    st.none(),
    st.integers(),
    st.text(max_size=10),
)


@settings(max_examples=300, deadline=None)
@given(_hostile_carrier)
def test_hostile_headers_of_any_shape_never_raise(carrier: Any) -> None:
    # The conftest fixture fails the test on any swallowed internal error as well.
    with oi.continue_from(carrier, headers_getter, hop=names.HOP_QUEUE_CONSUME):
        oi.get_identity()
    headers_getter.keys(carrier)


# Claims as set_identity takes them: no control characters, no leading or trailing whitespace.
_claim = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30
).filter(lambda v: v == v.strip())


@settings(max_examples=100, deadline=None)
@given(_claim, _claim, st.sampled_from(["dict", "pairs"]))
def test_any_identity_round_trips_through_bytes_headers(user: str, tenant: str, shape: str) -> None:
    identity = oi.Identity(user_id=user, tenant_id=tenant)
    carrier: Any = {} if shape == "dict" else []
    sent_by(identity, carrier, bytes_headers_setter)
    assert received(carrier) == identity


class TestInProcessQueue:
    def test_each_item_runs_under_the_identity_it_was_put_with(self) -> None:
        q: IdentityQueue[int] = IdentityQueue(queue.Queue())
        expected: dict[int, oi.Identity | None] = {}
        for i in range(20):
            identity = None if i % 3 == 0 else oi.Identity(user_id=f"u{i}", tenant_id=f"t{i}")
            expected[i] = identity
            with oi.use_identity(identity):
                q.put(i)
        seen: dict[int, oi.Identity | None] = {}

        def consume() -> None:
            with oi.use_identity(user_id="consumer-thread-leftover"):
                for _ in range(20):
                    with q.get(timeout=5) as item:
                        seen[item] = oi.get_identity()
                    q.task_done()

        worker = threading.Thread(target=consume)
        worker.start()
        worker.join(10)
        assert seen == expected

    def test_item_without_identity_records_missing_on_its_consumer_span(
        self, spans: InMemorySpanExporter, tracer: trace.Tracer
    ) -> None:
        q: IdentityQueue[str] = IdentityQueue()
        with oi.use_identity(ALICE):
            q.put("with")
        q.put("without")
        for _ in range(2):
            with q.get_nowait() as item:
                with tracer.start_as_current_span(f"handle {item}", kind=trace.SpanKind.CONSUMER):
                    pass
        by_name = {s.name: s for s in spans.get_finished_spans()}
        assert [e.name for e in by_name["handle without"].events] == [names.EVENT_MISSING]
        assert by_name["handle with"].events == ()
        assert by_name["handle with"].attributes["tenant.id"] == "acme"

    def test_consume_hops_are_counted(self) -> None:
        before = _telemetry.hop_counts()
        env = seal("x", context=oi.set_identity(ALICE, context=Context()))
        with env:
            pass
        after = _telemetry.hop_counts()
        key = (names.HOP_QUEUE_CONSUME, names.OUTCOME_PRESENT)
        assert after.get(key, 0) - before.get(key, 0) == 1

    def test_a_handler_that_raises_does_not_leak_identity(self) -> None:
        q: IdentityQueue[str] = IdentityQueue()
        with oi.use_identity(ALICE):
            q.put("boom")
        q.put("next")
        seen: list[oi.Identity | None] = []

        def handle(item: str) -> None:
            seen.append(oi.get_identity())
            raise RuntimeError(item)

        with pytest.raises(RuntimeError):
            q.get().run(handle, "boom")
        assert seen == [ALICE]
        assert oi.get_identity() is None
        with q.get() as item:
            assert item == "next"
            assert oi.get_identity() is None

    def test_current_user_is_resolved_per_item_in_the_consumer(self) -> None:
        calls: list[tuple[str | None, str]] = []

        def resolve(identity: oi.Identity) -> dict[str, Any]:
            calls.append((identity.user_id, threading.current_thread().name))
            return {"id": identity.user_id, "n": len(calls)}

        def user_n() -> int:
            return int(oi.get_current_user()["n"])

        oi.set_user_resolver(resolve)
        q: IdentityQueue[int] = IdentityQueue()
        with oi.use_identity(ALICE):
            user_n()  # resolved by the producer: must not be reused
            q.put(1)
            q.put(2)
        results = []

        def consume() -> None:
            for _ in range(2):
                with q.get() as _item:
                    results.append((user_n(), user_n()))

        worker = threading.Thread(target=consume, name="consumer")
        worker.start()
        worker.join(5)
        assert results == [(2, 2), (3, 3)]
        assert [c[1] for c in calls] == ["MainThread", "consumer", "consumer"]

    def test_envelope_run_calls_under_identity(self) -> None:
        env: Envelope[int] = seal(1, context=oi.set_identity(ALICE, context=Context()))
        assert env.run(oi.get_identity) == ALICE
        assert oi.get_identity() is None
        assert repr(env) == "Envelope(1)"

    def test_one_envelope_fanned_out_to_several_threads(self) -> None:
        env = seal("job", context=oi.set_identity(ALICE, context=Context()))
        barrier = threading.Barrier(4)
        seen: list[tuple[oi.Identity | None, oi.Identity | None]] = []

        def consume() -> None:
            with env:
                barrier.wait(5)  # all four inside at once
                inside = oi.get_identity()
                barrier.wait(5)
            seen.append((inside, oi.get_identity()))

        threads = [threading.Thread(target=consume) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert seen == [(ALICE, None)] * 4

    def test_queue_passthroughs(self) -> None:
        q: IdentityQueue[int] = IdentityQueue()
        assert q.empty()
        q.put_nowait(1)
        assert q.qsize() == 1
        q.get().run(q.task_done)
        q.join()


class TestAsyncQueue:
    def test_asyncio_consumer_runs_each_item_under_its_identity(self) -> None:
        async def main() -> list[tuple[int, oi.Identity | None]]:
            q: AsyncIdentityQueue[int] = AsyncIdentityQueue(asyncio.Queue())
            seen: list[tuple[int, oi.Identity | None]] = []

            async def consumer() -> None:
                for _ in range(6):
                    with await q.get() as item:
                        await asyncio.sleep(0)
                        seen.append((item, oi.get_identity()))
                    q.task_done()

            task = asyncio.create_task(consumer())
            for i in range(6):
                if i % 2:
                    with oi.use_identity(user_id=f"u{i}", tenant_id="t"):
                        await q.put(i)
                else:
                    q.put_nowait(i)
            await q.join()
            await task
            assert q.empty() and q.qsize() == 0
            return seen

        seen = asyncio.run(main())
        assert seen == [
            (i, oi.Identity(user_id=f"u{i}", tenant_id="t") if i % 2 else None) for i in range(6)
        ]

    def test_get_nowait_and_raise_leaves_no_identity(self) -> None:
        async def main() -> oi.Identity | None:
            q: AsyncIdentityQueue[int] = AsyncIdentityQueue()
            with oi.use_identity(ALICE):
                q.put_nowait(1)
            try:
                with q.get_nowait():
                    raise KeyError("x")
            except KeyError:
                pass
            return oi.get_identity()

        assert asyncio.run(main()) is None
