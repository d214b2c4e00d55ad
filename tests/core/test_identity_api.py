"""The manual baggage API: set/get/clear/use/require, immutability, nesting, asyncio."""

from __future__ import annotations

import asyncio
import random

import pytest
from opentelemetry import baggage, context

import otel_identity as oi


def test_set_identity_returns_new_context_and_never_mutates_the_given_one() -> None:
    base = context.get_current()
    before = dict(base)
    ctx = oi.set_identity(user_id="u1", tenant_id="t1", context=base)
    assert dict(base) == before
    assert oi.get_identity(base) is None
    assert oi.get_identity(ctx) == oi.Identity(user_id="u1", tenant_id="t1")


def test_identity_rides_in_plain_baggage_so_plain_otel_reads_it() -> None:
    ctx = oi.set_identity(user_id="u1", tenant_id="acme", session_id="s", roles=["a", "b"])
    assert baggage.get_all(ctx) == {
        "user.id": "u1",
        "tenant.id": "acme",
        "session.id": "s",
        "user.roles": "a,b",
    }


def test_identity_values_are_immutable() -> None:
    identity = oi.Identity(user_id="u", roles=["a", "b"])  # type: ignore[arg-type]
    assert identity.roles == ("a", "b")
    with pytest.raises(AttributeError):
        identity.user_id = "other"  # type: ignore[misc]
    assert hash(identity) == hash(oi.Identity(user_id="u", roles=("a", "b")))


def test_set_identity_keeps_other_baggage_and_replaces_previous_identity() -> None:
    ctx = baggage.set_baggage("feature", "x")
    ctx = oi.set_identity(user_id="u1", tenant_id="t1", context=ctx)
    ctx = oi.set_identity(user_id="u2", context=ctx)
    assert baggage.get_all(ctx) == {"user.id": "u2", "feature": "x"}
    assert oi.get_identity(ctx) == oi.Identity(user_id="u2")


def test_clear_identity_removes_only_identity_members() -> None:
    ctx = oi.set_identity(user_id="u1", context=baggage.set_baggage("feature", "x"))
    cleared = oi.clear_identity(ctx)
    assert oi.get_identity(cleared) is None
    assert baggage.get_all(cleared) == {"feature": "x"}
    assert oi.get_identity(ctx) is not None


def test_identity_changed_through_plain_baggage_api_is_seen() -> None:
    ctx = oi.set_identity(user_id="u1", tenant_id="t1")
    ctx = baggage.set_baggage("tenant.id", "t2", ctx)
    assert oi.get_identity(ctx) == oi.Identity(user_id="u1", tenant_id="t2")


def test_identity_or_claims_not_both() -> None:
    with pytest.raises(TypeError):
        oi.set_identity(oi.Identity(user_id="u"), user_id="v")


@pytest.mark.parametrize(
    ("claims", "error"),
    [
        ({"user_id": 42}, TypeError),
        ({"user_id": "a\x00b"}, ValueError),
        ({"tenant_id": "x" * 1025}, ValueError),
        ({"roles": ["ok", "bad\n"]}, ValueError),
    ],
)
def test_values_that_cannot_travel_are_refused_with_a_clear_error(
    claims: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        oi.set_identity(**claims)  # type: ignore[arg-type]


def test_empty_claims_mean_no_identity() -> None:
    assert oi.get_identity(oi.set_identity(user_id="", tenant_id=None)) is None


def test_require_identity_raises_only_when_missing() -> None:
    with pytest.raises(oi.MissingIdentityError):
        oi.require_identity()
    with oi.use_identity(user_id="u"):
        assert oi.require_identity().user_id == "u"


def test_nested_use_identity_restores_each_level() -> None:
    with oi.use_identity(user_id="outer", tenant_id="t"):
        with oi.use_identity(user_id="inner"):
            assert oi.get_identity() == oi.Identity(user_id="inner")
            with oi.use_identity():
                assert oi.get_identity() is None
            assert oi.get_identity() == oi.Identity(user_id="inner")
        assert oi.get_identity() == oi.Identity(user_id="outer", tenant_id="t")
    assert oi.get_identity() is None


def test_use_identity_restores_after_an_exception() -> None:
    with pytest.raises(RuntimeError), oi.use_identity(user_id="u"):
        raise RuntimeError("boom")
    assert oi.get_identity() is None


def test_use_identity_decorates_sync_functions_per_call() -> None:
    @oi.use_identity(user_id="system", roles=["batch"])
    def job(x: int) -> tuple[int, oi.Identity | None]:
        return x, oi.get_identity()

    assert job(1) == (1, oi.Identity(user_id="system", roles=("batch",)))
    assert job.__name__ == "job"
    assert oi.get_identity() is None


def test_use_identity_decorates_async_functions_per_call() -> None:
    @oi.use_identity(user_id="async-user")
    async def job() -> oi.Identity | None:
        await asyncio.sleep(0)
        return oi.get_identity()

    assert asyncio.iscoroutinefunction(job)
    assert asyncio.run(job()) == oi.Identity(user_id="async-user")


def test_use_identity_as_async_context_manager() -> None:
    async def main() -> oi.Identity | None:
        async with oi.use_identity(user_id="u"):
            await asyncio.sleep(0)
            return oi.get_identity()

    assert asyncio.run(main()) == oi.Identity(user_id="u")


def test_use_identity_rejects_unknown_claims() -> None:
    with pytest.raises(TypeError):
        oi.use_identity(user="u")


def test_thousand_interleaved_asyncio_tasks_never_see_each_others_identity() -> None:
    rng = random.Random(7)
    expected = {i: (f"user-{rng.randrange(50)}", f"tenant-{rng.randrange(5)}") for i in range(1000)}
    mismatches: list[int] = []

    async def task(i: int) -> None:
        user, tenant = expected[i]
        with oi.use_identity(user_id=user, tenant_id=tenant):
            for _ in range(3):
                await asyncio.sleep(rng.random() / 1000)
                identity = oi.get_identity()
                if identity is None or (identity.user_id, identity.tenant_id) != (user, tenant):
                    mismatches.append(i)
        if oi.get_identity() is not None:
            mismatches.append(-i)

    async def main() -> None:
        await asyncio.gather(*(task(i) for i in range(1000)))

    asyncio.run(main())
    assert mismatches == []


def test_child_task_changing_identity_does_not_leak_into_parent() -> None:
    async def child() -> None:
        context.attach(oi.set_identity(user_id="child"))

    async def main() -> oi.Identity | None:
        with oi.use_identity(user_id="parent"):
            await asyncio.create_task(child())
            return oi.get_identity()

    assert asyncio.run(main()) == oi.Identity(user_id="parent")
