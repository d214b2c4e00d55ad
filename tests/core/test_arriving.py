"""A receiving hop announced, then decided inside OpenTelemetry's own extract (``_arriving``).

Each test runs its request in a ``contextvars.Context`` of its own, as grpc runs an RPC and a
WSGI server runs a request in its worker thread: the announcement lives there.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from opentelemetry import baggage, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import default_getter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

import otel_identity as oi
from otel_identity import _telemetry, names
from otel_identity import instrumentation as oii
from tests.baggage_step import OUR_STEP, our_baggage_step  # noqa: F401 - autouse
from tests.hostile_baggage import hostile_headers

HOP = names.HOP_GRPC_SERVER
ROUTE = "/shop.Orders/Get"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
OURS = OUR_STEP
OPENTELEMETRYS = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
T = TypeVar("T")
FUZZ = settings(
    max_examples=1000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def in_request(run: Callable[[], T]) -> T:
    """``run`` in a contextvars.Context of its own (one request)."""
    return contextvars.Context().run(run)


def totals() -> dict[tuple[str, ...], int]:
    return dict(_telemetry.hop_totals())


def added(before: dict[tuple[str, ...], int]) -> dict[tuple[str, ...], int]:
    after = totals()
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def carrier(baggage_header: str | None = "user.id=u-1,tenant.id=acme") -> dict[str, str]:
    found = {"traceparent": TRACEPARENT}
    if baggage_header is not None:
        found["baggage"] = baggage_header
    return found


def test_opentelemetrys_extract_decides_the_announced_hop() -> None:
    def request() -> tuple[Any, ...]:
        marker = oii.announce(HOP, ROUTE)
        assert marker is not None and oii.announced(HOP) is marker
        ctx = propagate.extract(carrier())  # OpenTelemetry's pass
        return marker, ctx

    before = totals()
    marker, ctx = in_request(request)
    assert oi.get_identity(ctx) == oi.Identity(user_id="u-1", tenant_id="acme")
    assert marker.decided(ctx) and not marker.open and marker.counted
    assert oi.hop_state(ctx) is marker.state
    assert marker.state.outcome == names.OUTCOME_PRESENT
    # The sender's span, from the textmap's other step, is kept.
    assert format(trace.get_current_span(ctx).get_span_context().span_id, "016x") == (
        "b7ad6b7169203331"
    )
    assert added(before) == {(HOP, names.OUTCOME_PRESENT): 1}


def test_a_context_made_from_the_decided_one_is_decided_too(tracer: trace.Tracer) -> None:
    def request() -> bool:
        marker = oii.announce(HOP, ROUTE)
        assert marker is not None
        ctx = propagate.extract(carrier())
        span = tracer.start_span("server", context=ctx, kind=trace.SpanKind.SERVER)
        try:
            return marker.decided(trace.set_span_in_context(span, ctx))
        finally:
            span.end()

    assert in_request(request)


def test_only_the_first_extract_takes_the_hop() -> None:
    def request() -> tuple[Any, ...]:
        marker = oii.announce(HOP, ROUTE)
        first = propagate.extract(carrier())
        second = propagate.extract(carrier("user.id=other"))
        return marker, first, second

    before = totals()
    marker, first, second = in_request(request)
    assert marker.decided(first) and not marker.decided(second)
    assert oi.hop_state(second) is None  # an ordinary extract: no hop, nothing counted
    assert baggage.get_baggage("user.id", second) == "other"
    assert added(before) == {(HOP, names.OUTCOME_PRESENT): 1}


def test_nothing_is_announced_where_the_baggage_step_is_not_ours() -> None:
    propagate.set_global_textmap(OPENTELEMETRYS)
    assert in_request(lambda: oii.announce(HOP, ROUTE)) is None
    propagate.set_global_textmap(OURS)  # a swap is seen on the next announcement
    assert in_request(lambda: oii.announce(HOP, ROUTE)) is not None


def test_each_hop_has_its_own_current_user_slot() -> None:
    resolved: list[object] = []

    def resolve(identity: oi.Identity) -> object:
        resolved.append(object())
        return resolved[-1]

    oi.set_user_resolver(resolve)

    def request() -> object:
        oii.announce(HOP, ROUTE)
        return oi.get_current_user(propagate.extract(carrier()))

    first, second = in_request(request), in_request(request)
    assert first is not second and [first, second] == resolved


def test_a_hook_that_counts_the_hop_itself_makes_its_own_state() -> None:
    made: list[tuple[Any, ...]] = []

    def adopt(state: oii.HopState, route: str | None, arrived: oi.Identity | None) -> Any:
        made.append((state.outcome, route, arrived))
        return oii.HopState(state.hop, state.outcome)

    def request() -> tuple[Any, ...]:
        marker = oii.announce(HOP, ROUTE, account=False, adopt=adopt)
        assert marker is not None
        return marker, propagate.extract(carrier())

    before = totals()
    marker, ctx = in_request(request)
    assert made == [(names.OUTCOME_PRESENT, ROUTE, oi.Identity(user_id="u-1", tenant_id="acme"))]
    assert oi.hop_state(ctx) is marker.state and not marker.counted
    assert added(before) == {}  # left to the hook


def test_missing_and_anonymous_hops_are_decided_by_the_route() -> None:
    oi.configure(anonymous_routes="/grpc.health.v1.Health/Check")

    def request(route: str) -> Callable[[], Any]:
        def run() -> Any:
            oii.announce(HOP, route)
            return oi.hop_state(propagate.extract(carrier(None)))

        return run

    before = totals()
    missing = in_request(request(ROUTE))
    anonymous = in_request(request("/grpc.health.v1.Health/Check"))
    assert [name for name, _ in missing.pending] == [names.EVENT_MISSING]
    assert anonymous.outcome == names.OUTCOME_ANONYMOUS and not anonymous.pending
    assert added(before) == {(HOP, names.OUTCOME_MISSING): 1, (HOP, names.OUTCOME_ANONYMOUS): 1}


def test_withdraw_ends_the_announcement() -> None:
    def request() -> tuple[Any, ...]:
        marker = oii.announce(HOP, ROUTE)
        assert marker is not None
        oii.withdraw(marker)
        return marker, oii.announced(HOP), propagate.extract(carrier())

    before = totals()
    marker, found, ctx = in_request(request)
    assert found is None and not marker.open and oi.hop_state(ctx) is None
    assert added(before) == {}


def test_withdrawing_twice_or_from_another_context_never_raises() -> None:
    marker = in_request(lambda: oii.announce(HOP, ROUTE))
    assert marker is not None
    oii.withdraw(marker)  # from another context than the announcement's
    assert not marker.open

    def twice() -> Any:
        again = oii.announce(HOP, ROUTE)
        assert again is not None
        oii.withdraw(again)
        oii.withdraw(again)
        return oii.announced(HOP)

    assert in_request(twice) is None


def test_withdraw_puts_back_the_announcement_it_covered() -> None:
    def request() -> tuple[Any, ...]:
        outer = oii.announce(HOP, ROUTE)
        inner = oii.announce(HOP, "/inner")
        assert inner is not None
        oii.withdraw(inner)
        return outer, oii.announced(HOP)

    outer, found = in_request(request)
    assert found is outer


def test_a_request_announced_and_decided_leaves_no_garbage_for_the_collector() -> None:
    """The per-request Context, the marker and what the hop's context holds are freed when the
    request ends: no reference cycle waits for the garbage collector."""
    import gc

    def request() -> None:
        oii.announce(HOP, ROUTE)
        propagate.extract(carrier())

    for _ in range(3):
        in_request(request)  # warm: caches and memos made once
    gc.collect()
    gc.disable()
    try:
        for _ in range(50):
            in_request(request)
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_a_hook_decides_an_announcement_no_extract_took() -> None:
    def request() -> tuple[Any, ...]:
        marker = oii.announce(HOP, ROUTE)
        assert marker is not None
        return marker, marker.decide(Context(), carrier(), default_getter)

    marker, ctx = in_request(request)
    assert marker.decided(ctx) and oi.get_identity(ctx) == oi.Identity("u-1", "acme")


def test_the_hop_is_decided_on_the_request_as_the_hook_reads_it() -> None:
    # (OpenTelemetry's gRPC interceptor extracts from a dict of the metadata, which keeps the
    # last of two baggage entries: the hook's own read sees both, and their conflict)
    metadata = [("baggage", "user.id=a"), ("baggage", "user.id=b")]

    def request() -> tuple[Any, ...]:
        marker = oii.announce(HOP, ROUTE, request=(metadata, _PairsGetter()))
        return marker, propagate.extract(dict(metadata))

    before = totals()
    marker, ctx = in_request(request)
    assert oi.get_identity(ctx) is None and marker.decided(ctx)
    assert marker.request is None  # not kept once the hop is decided
    assert added(before) == {(HOP, names.OUTCOME_REJECTED, names.REASON_MALFORMED): 1}


class _PairsGetter:
    """A getter over (key, value) pairs that sees every value of a repeated key."""

    def get(self, carrier: list[tuple[str, str]], key: str) -> list[str] | None:
        return [v for k, v in carrier if k == key] or None

    def keys(self, carrier: list[tuple[str, str]]) -> list[str]:
        return [k for k, _ in carrier]


def test_announcements_are_per_kind_of_hop() -> None:
    def request() -> Any:
        oii.announce(names.HOP_HTTP_SERVER, "/orders")
        return oii.announced(HOP)

    assert in_request(request) is None


# -- what the announced path admits is what extract admits -------------------------------


def _both_paths(header: str) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """(identity, baggage, hop state's outcome and reason, counts) on either path."""

    def seen(ctx: Context, before: dict[tuple[str, ...], int]) -> tuple[Any, ...]:
        state = oi.hop_state(ctx)
        outcome = (state.outcome, state.reason) if state is not None else None
        return oi.get_identity(ctx), dict(baggage.get_all(ctx)), outcome, added(before)

    before = totals()
    general = oi.extract({"baggage": header}, hop=HOP, route=ROUTE, context=Context())
    general_seen = seen(general, before)

    def announced() -> tuple[Any, ...]:
        oii.announce(HOP, ROUTE)
        start = totals()
        return seen(propagate.extract({"baggage": header}), start)

    return general_seen, in_request(announced)


@pytest.mark.parametrize("policy", ["trust", "verify"])
@pytest.mark.parametrize(
    "header",
    [
        "user.id=u-1,tenant.id=acme",
        "user.id=a,user.id=b,other=kept",
        "user.id=u-1,tenant.id=%0D,other=kept",
        "%75ser.id=mallory,tenant.id=acme",
        "user.id=" + "x" * 9000,
        ",".join(f"k{i}=v" for i in range(80)) + ",user.id=u-1",
        "",
    ],
)
def test_the_announced_path_decides_as_extract_does(policy: str, header: str) -> None:
    oi.configure(inbound=policy, signing_keys="k1:" + "a" * 44 if policy == "verify" else None)
    general, announced = _both_paths(header)
    assert announced == general


@FUZZ
@given(hostile_headers)
def test_hostile_headers_through_the_announced_path_are_decided_as_by_extract(
    header: str,
) -> None:
    general, announced = _both_paths(header)
    assert announced == general
    assert announced[0] is None  # and give no identity


# -- an announcer made once, announcing each request ---------------------------------------


def _announced_header(header: str) -> tuple[Any, ...]:
    """The hop of one request decided from the header the hook read itself ((header, None)),
    while OpenTelemetry's extract reads something else."""
    announcer = oii.Announcer(HOP, ROUTE)

    def request() -> tuple[Any, ...]:
        marker = announcer((header, None))
        assert marker is not None and oii.announced(HOP) is marker
        start = totals()
        ctx = propagate.extract({"baggage": "user.id=not-this-one"})
        state = oi.hop_state(ctx)
        outcome = (state.outcome, state.reason) if state is not None else None
        assert marker.decided(ctx) and marker.request is None
        return oi.get_identity(ctx), dict(baggage.get_all(ctx)), outcome, added(start)

    return in_request(request)


@pytest.mark.parametrize(
    "header",
    [
        "user.id=u-1,tenant.id=acme",
        "user.id=a,user.id=b,other=kept",
        "user.id=a,user.id=b",  # (two lines, joined, as a getter's list of them is)
        "%75ser.id=mallory,tenant.id=acme",
        "user.id=" + "x" * 9000,
        "",
    ],
)
def test_an_announcer_decides_the_header_the_hook_read_as_extract_does(header: str) -> None:
    general, _ = _both_paths(header)
    assert _announced_header(header) == general


def test_an_announcer_announces_each_request_and_nothing_under_another_baggage_step() -> None:
    announcer = oii.Announcer(HOP, ROUTE, account=False)

    def request() -> tuple[Any, ...]:
        covered = oii.announce(names.HOP_HTTP_SERVER, "/orders")
        marker = announcer()
        assert marker is not None
        ctx = propagate.extract(carrier())
        oii.withdraw(marker)
        return marker, ctx, covered

    first, ctx, covered = in_request(request)
    second, _, _ = in_request(request)
    assert first is not second and first.announcer is second.announcer is announcer
    assert (first.hop, first.route, first.account, first.adopt) == (HOP, ROUTE, False, None)
    assert first.decided(ctx) and not first.counted  # the hook counts it (account=False)
    assert first.previous is covered  # what withdraw put back
    propagate.set_global_textmap(OPENTELEMETRYS)
    assert in_request(announcer) is None


def test_decided_context_says_what_announced_and_decided_say_together() -> None:
    def request() -> list[bool]:
        answers = []
        marker = oii.announce(HOP, ROUTE)
        assert marker is not None
        answers.append(oii.decided_context(HOP) is None)  # announced, not decided yet
        ctx = propagate.extract(carrier())
        token = oii.attach(ctx)
        try:
            answers.append(oii.decided_context(HOP) is ctx)
            answers.append(oii.decided_context(names.HOP_HTTP_SERVER) is None)  # another kind
            covering = oii.announce(HOP, ROUTE)  # a later announcement, not decided in ctx
            answers.append(oii.decided_context(HOP) is None)
            assert covering is not None
            oii.withdraw(covering)
            answers.append(oii.decided_context(HOP) is ctx)  # the hop's own, again
        finally:
            oii.detach(token)
        answers.append(oii.decided_context(HOP) is None)  # its context no longer current
        return answers

    assert in_request(request) == [True] * 6
