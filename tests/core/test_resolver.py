"""The resolver and current_user: lazy, once per hop, own thread, cache, failures."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from opentelemetry import context, trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_identity as oi
from otel_identity import _telemetry


@dataclass(eq=True)
class User:
    id: str
    tenant: str | None
    thread: int


class CountingResolver:
    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, identity: oi.Identity) -> User | None:
        with self.lock:
            self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        if identity.user_id == "ghost":
            return None
        return User(str(identity.user_id), identity.tenant_id, threading.get_ident())


def test_without_identity_current_user_is_none_and_falsy() -> None:
    oi.set_user_resolver(CountingResolver())
    assert oi.get_current_user() is None
    assert not oi.current_user
    assert oi.current_user == None  # noqa: E711 - the proxy must compare like its target
    assert repr(oi.current_user) == "None"
    with pytest.raises(AttributeError, match="no identity"):
        _ = oi.current_user.id


def test_resolution_is_lazy_and_happens_once_per_hop() -> None:
    resolver = CountingResolver()
    oi.set_user_resolver(resolver)
    with oi.use_identity(user_id="u1", tenant_id="t1"):
        assert resolver.calls == 0
        assert oi.current_user.id == "u1"
        assert oi.current_user.tenant == "t1"
        assert oi.get_current_user() is oi.get_current_user()
        assert resolver.calls == 1
        with oi.use_identity(user_id="u2"):
            assert oi.current_user.id == "u2"
        assert oi.current_user.id == "u1"
    assert resolver.calls == 2


def test_proxy_behaves_like_the_user_object() -> None:
    oi.set_user_resolver(CountingResolver())
    with oi.use_identity(user_id="u1"):
        user = oi.get_current_user()
        assert oi.current_user == user
        assert not (oi.current_user != user)  # noqa: SIM202 - __ne__ is under test
        assert bool(oi.current_user)
        assert isinstance(oi.current_user, User)
        assert repr(oi.current_user) == repr(user)
        assert str(oi.current_user) == str(user)
        assert hash(oi.current_user) == hash(user) if user.__hash__ else True
        assert "tenant" in dir(oi.current_user)


def test_each_receiving_thread_resolves_its_own_user_object() -> None:
    resolver = CountingResolver()
    oi.set_user_resolver(resolver)
    with oi.use_identity(user_id="u1"):
        parent_user = oi.get_current_user()
        captured = context.get_current()

    def branch() -> User:
        with oi.continue_context(captured, hop="thread"):
            return oi.get_current_user()  # type: ignore[no-any-return]

    with ThreadPoolExecutor(4) as pool:
        users = [f.result() for f in [pool.submit(branch) for _ in range(8)]]
    assert all(u == User("u1", None, u.thread) for u in users)
    assert all(u is not parent_user for u in users)
    assert all(u.thread != parent_user.thread for u in users)


def test_a_context_copied_by_hand_into_another_thread_does_not_hand_over_the_user() -> None:
    oi.set_user_resolver(CountingResolver())
    with oi.use_identity(user_id="u1"):
        mine = oi.get_current_user()
        captured = context.get_current()
    result: list[User] = []

    def other() -> None:
        token = context.attach(captured)
        try:
            result.append(oi.get_current_user())
        finally:
            context.detach(token)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert result[0] is not mine and result[0].thread != mine.thread


def test_cache_single_flight_fifty_concurrent_misses_call_the_resolver_once() -> None:
    resolver = CountingResolver(delay=0.2)
    oi.set_user_resolver(resolver, cache_ttl=60)
    barrier = threading.Barrier(50)
    captured = oi.set_identity(user_id="hot", tenant_id="t")

    def miss() -> User:
        barrier.wait()
        with oi.continue_context(captured, hop="thread"):
            return oi.get_current_user()  # type: ignore[no-any-return]

    with ThreadPoolExecutor(50) as pool:
        users = list(pool.map(lambda _: miss(), range(50)))
    assert resolver.calls == 1
    assert all(u == users[0] for u in users)


def test_cache_expires_after_ttl() -> None:
    resolver = CountingResolver()
    oi.set_user_resolver(resolver, cache_ttl=0.05)
    ctx = oi.set_identity(user_id="u")
    oi.get_current_user(oi.receive(ctx, hop="thread"))
    oi.get_current_user(oi.receive(ctx, hop="thread"))
    assert resolver.calls == 1
    time.sleep(0.08)
    oi.get_current_user(oi.receive(ctx, hop="thread"))
    assert resolver.calls == 2


def test_cache_does_not_keep_not_found_users() -> None:
    resolver = CountingResolver()
    oi.set_user_resolver(resolver, cache_ttl=60)
    ctx = oi.set_identity(user_id="ghost")
    assert oi.get_current_user(oi.receive(ctx, hop="thread")) is None
    assert oi.get_current_user(oi.receive(ctx, hop="thread")) is None
    assert resolver.calls == 2


def test_a_resolver_that_raises_gives_none_an_event_and_one_log_line(
    spans: InMemorySpanExporter, tracer: trace.Tracer, caplog: pytest.LogCaptureFixture
) -> None:
    class DatabaseDown(Exception):
        pass

    def broken(identity: oi.Identity) -> User:
        raise DatabaseDown("connection refused")

    oi.set_user_resolver(broken)
    caplog.set_level("ERROR", logger="otel_identity")
    _telemetry._logged_once.discard(("resolve_failed", "DatabaseDown"))
    for _ in range(3):
        with oi.continue_from({"baggage": "user.id=u"}, hop="queue.consume"):
            with tracer.start_as_current_span("task"):
                assert oi.get_current_user() is None
                assert not oi.current_user
    events = [
        dict(e.attributes or {})
        for s in spans.get_finished_spans()
        for e in s.events
        if e.name == "identity.resolve_failed"
    ]
    assert events == [{"identity.hop": "queue.consume", "exception.type": "DatabaseDown"}] * 3
    assert len([r for r in caplog.records if "DatabaseDown" in r.getMessage()]) == 1


def test_resolve_duration_histogram_is_recorded(metric_reader: object) -> None:
    oi.set_user_resolver(CountingResolver())
    with oi.use_identity(user_id="u"):
        oi.get_current_user()
    names = [
        m.name
        for rm in metric_reader.get_metrics_data().resource_metrics  # type: ignore[attr-defined]
        for sm in rm.scope_metrics
        for m in sm.metrics
    ]
    assert "otel_identity.resolve.duration" in names


def test_async_resolver_from_async_code() -> None:
    calls: list[str] = []

    @oi.user_resolver
    async def load(identity: oi.Identity) -> User:
        calls.append(str(identity.user_id))
        await asyncio.sleep(0.01)
        return User(str(identity.user_id), identity.tenant_id, 0)

    async def main() -> tuple[object, object]:
        with oi.use_identity(user_id="a1"):
            first, second = await asyncio.gather(oi.aget_current_user(), oi.aget_current_user())
            return first, second

    first, second = asyncio.run(main())
    assert first == second == User("a1", None, 0)
    assert calls == ["a1"]


def test_async_resolver_from_sync_code_and_from_sync_code_inside_a_loop() -> None:
    @oi.user_resolver(timeout=1.0)
    async def load(identity: oi.Identity) -> str:
        await asyncio.sleep(0)
        return f"user:{identity.user_id}"

    with oi.use_identity(user_id="s"):
        assert oi.get_current_user() == "user:s"

    async def inside_loop() -> object:
        with oi.use_identity(user_id="l"):
            return oi.current_user._get_current_object()

    assert asyncio.run(inside_loop()) == "user:l"


def test_async_resolver_timeout_is_a_resolve_failure(
    spans: InMemorySpanExporter, tracer: trace.Tracer
) -> None:
    @oi.user_resolver(timeout=0.01)
    async def slow(identity: oi.Identity) -> str:
        await asyncio.sleep(1)
        return "late"

    async def main() -> object:
        with oi.use_identity(user_id="u"), tracer.start_as_current_span("h"):
            return await oi.aget_current_user()

    assert asyncio.run(main()) is None
    (span,) = spans.get_finished_spans()
    assert [e.attributes["exception.type"] for e in span.events] == ["TimeoutError"]  # type: ignore[index]


def test_resolver_reading_current_user_does_not_recurse_forever() -> None:
    @oi.user_resolver
    def load(identity: oi.Identity) -> str:
        assert oi.get_current_user() is None
        return "ok"

    with oi.use_identity(user_id="u"):
        assert oi.get_current_user() == "ok"


def test_resolver_from_environment_is_loaded_at_first_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_IDENTITY_RESOLVER", "tests.core.resolvers:by_id")
    from otel_identity import _config

    _config.reset_settings()
    with oi.use_identity(user_id="env"):
        assert oi.get_current_user() == {"id": "env"}


@pytest.mark.parametrize(
    ("value", "says"),
    [("no.such.module:fn", "cannot load resolver"), ("logging:DEBUG", "is not callable")],
)
def test_bad_resolver_setting_logs_and_leaves_user_none(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, value: str, says: str
) -> None:
    monkeypatch.setenv("OTEL_IDENTITY_RESOLVER", value)
    from otel_identity import _config

    _config.reset_settings()
    for _ in range(2):
        with oi.use_identity(user_id="u"):
            assert oi.get_current_user() is None
    assert len([r for r in caplog.records if says in r.getMessage()]) == 1
    assert "user resolver failed" not in caplog.text  # never called, so never failing per hop


def test_clear_cache_forces_a_new_resolution() -> None:
    resolver = CountingResolver()
    oi.set_user_resolver(resolver, cache_ttl=60)
    ctx = oi.set_identity(user_id="u")
    oi.get_current_user(oi.receive(ctx, hop="thread"))
    oi.clear_cache()
    oi.get_current_user(oi.receive(ctx, hop="thread"))
    assert resolver.calls == 2


def _run_bounded(main: object, seconds: float = 10.0) -> object:
    """Run a coroutine in a thread of its own; a deadlock fails the test instead of hanging."""
    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append(asyncio.run(main)), daemon=True)  # type: ignore[arg-type]
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "the event loop is blocked: a sync read waited on its own loop"
    return result[0]


def test_a_sync_read_on_the_loop_never_waits_for_a_resolution_that_needs_that_loop(
    spans: InMemorySpanExporter, tracer: trace.Tracer, caplog: pytest.LogCaptureFixture
) -> None:
    release = asyncio.Event()

    @oi.user_resolver(cache_ttl=60)
    async def load(identity: oi.Identity) -> str:
        await release.wait()
        return f"user:{identity.user_id}"

    async def request_a() -> object:
        with oi.use_identity(user_id="same"):
            return await oi.aget_current_user()

    async def request_b() -> object:
        await asyncio.sleep(0.01)  # A is now resolving on this loop
        with oi.use_identity(user_id="same"), tracer.start_as_current_span("b"):
            seen = oi.current_user._get_current_object()  # synchronous, on the loop's thread
        release.set()
        return seen

    async def main() -> tuple[object, object]:
        a, b = await asyncio.gather(request_a(), request_b())
        return a, b

    a, b = _run_bounded(main())  # type: ignore[misc]
    assert a == "user:same"
    assert b is None
    (span,) = spans.get_finished_spans()
    assert [e.name for e in span.events] == ["identity.resolve_failed"]
    assert span.events[0].attributes["exception.type"] == "LoopWouldBlockError"  # type: ignore[index]
    assert "aget_current_user" in caplog.text


def test_a_sync_read_on_a_loop_waits_for_a_resolution_elsewhere_at_most_the_timeout(
    spans: InMemorySpanExporter, tracer: trace.Tracer
) -> None:
    started, release = threading.Event(), threading.Event()

    @oi.user_resolver(cache_ttl=60, timeout=0.2)
    def load(identity: oi.Identity) -> str:
        started.set()
        release.wait(5)
        return f"user:{identity.user_id}"

    def leader() -> object:
        with oi.use_identity(user_id="slow"):
            return oi.get_current_user()

    async def follower() -> object:
        with oi.use_identity(user_id="slow"), tracer.start_as_current_span("f"):
            return oi.current_user._get_current_object()

    with ThreadPoolExecutor(1) as pool:
        lead = pool.submit(leader)
        assert started.wait(5)
        try:
            assert _run_bounded(follower()) is None
        finally:
            release.set()
        assert lead.result(5) == "user:slow"
    (span,) = spans.get_finished_spans()
    assert [e.name for e in span.events] == ["identity.resolve_failed"]
