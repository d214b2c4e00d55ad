"""The gRPC server hop, sync and asyncio, decided inside OpenTelemetry's own pass (#13, point 7).

With OpenTelemetry's server interceptor outside ours and our baggage step in the global
textmap, its extract decides the hop and the handler runs on that context as it is. These
tests prove it is the same hop as on the general path (identity in every call shape,
``current_user`` per hop, events, counts, hostile metadata), that it needs no recording span
(every case runs sampled and dropped, with the same counts), and that ours still does the
whole hop wherever no such pass runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc
import grpc.aio
import otel_identity_grpc as oi_grpc
import pytest
from opentelemetry import propagate
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Sampler
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from otel_identity_grpc import GrpcIdentityInstrumentor

import otel_identity as oi
from otel_identity import names
from tests import hop_counts
from tests.baggage_step import SAMPLERS, our_baggage_step  # noqa: F401 - autouse

from .otel_identity_grpc_echo import (
    HEALTH,
    SHAPES,
    STREAM_LENGTH,
    aio_call,
    aio_server,
    call,
    otel_grpc,
    sync_server,
)


def _provider(sampler: Sampler) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(oi.IdentitySpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _otel_then_ours(provider: TracerProvider) -> list[Any]:
    """The order the instrumentors set: OpenTelemetry's interceptor first, ours right after."""
    return [otel_grpc.server_interceptor(tracer_provider=provider), oi_grpc.server_interceptor()]


def _calls(
    target: str, n: int = 1, shape: str = "UnaryUnary", method: str | None = None, **claims: Any
) -> list[dict[str, Any]]:
    """``n`` calls from an identity-instrumented channel, under ``claims`` if any."""
    channel = grpc.intercept_channel(
        grpc.insecure_channel(target), oi_grpc.client_interceptor(target)
    )
    responses: list[dict[str, Any]] = []
    with channel, contextlib.ExitStack() as stack:
        if claims:
            stack.enter_context(oi.use_identity(**claims))
        for _ in range(n):
            if method is None:
                responses.extend(call(channel, shape))
            else:
                channel.unary_unary(method)(b"x", timeout=10)
    return responses


def _totals() -> hop_counts.Counts:
    return hop_counts.totals(names.HOP_GRPC_SERVER)


def _delta(before: hop_counts.Counts) -> hop_counts.Counts:
    return hop_counts.delta(before, names.HOP_GRPC_SERVER)


_server_events = hop_counts.server_events


# -- decided in OpenTelemetry's extract, sampled or not ---------------------------------------


@SAMPLERS
@pytest.mark.parametrize("shape", SHAPES)
def test_with_opentelemetry_outside_the_hop_is_decided_in_its_extract(
    sampler: Sampler, shape: str
) -> None:
    provider, exporter = _provider(sampler)
    before = _totals()
    with sync_server(_otel_then_ours(provider)) as target:
        responses = _calls(target, 2, shape, user_id="u-7", tenant_id="acme")
    steps = STREAM_LENGTH if shape.endswith("Stream") else 1
    assert [(r["user"], r["in_otel_pass"]) for r in responses] == [("u-7", True)] * 2 * steps
    # Counted once per RPC whether or not the server span records.
    assert _delta(before) == {(names.OUTCOME_PRESENT,): 2}
    server = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert len(server) == (2 if sampler is ALWAYS_ON else 0)
    assert all(s.attributes and s.attributes.get(names.USER_ID) == "u-7" for s in server)


@SAMPLERS
@pytest.mark.parametrize("opentelemetry_first", [True, False], ids=["otel-first", "ours-first"])
def test_in_either_load_order_of_the_instrumentors_the_hop_is_decided_in_opentelemetrys_extract(
    sampler: Sampler, opentelemetry_first: bool
) -> None:
    provider, _ = _provider(sampler)
    ordered: list[Any] = [otel_grpc.GrpcInstrumentorServer(), GrpcIdentityInstrumentor()]
    if not opentelemetry_first:
        ordered.reverse()
    for instrumentor in ordered:
        instrumentor.instrument(tracer_provider=provider)
    before = _totals()
    with sync_server() as target:
        responses = _calls(target, 2, user_id="u-7", tenant_id="acme")
    assert [(r["user"], r["in_otel_pass"]) for r in responses] == [("u-7", True)] * 2
    assert _delta(before) == {(names.OUTCOME_PRESENT,): 2}


class _User:
    def __init__(self, user_id: str | None) -> None:
        self.user_id = user_id


def test_current_user_is_resolved_afresh_on_every_hop() -> None:
    resolved: list[_User] = []

    def resolve(identity: oi.Identity) -> _User:
        resolved.append(_User(identity.user_id))
        return resolved[-1]

    oi.set_user_resolver(resolve)
    seen: list[object] = []
    provider, _ = _provider(ALWAYS_ON)
    interceptors = [*_otel_then_ours(provider), _CurrentUser(seen)]
    with sync_server(interceptors) as target:
        responses = _calls(target, 2, user_id="u-7", tenant_id="acme")
    assert all(r["in_otel_pass"] for r in responses)
    assert [getattr(u, "user_id", None) for u in seen] == ["u-7", "u-7"]
    assert seen[0] is not seen[1]
    assert seen == resolved  # once per hop, in the hop's own slot


class _CurrentUser(grpc.ServerInterceptor):  # type: ignore[misc]
    """An application interceptor inside ours: records current_user in each handler."""

    def __init__(self, seen: list[object]) -> None:
        self.seen = seen

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        inner = continuation(details)
        if inner is None or inner.unary_unary is None:
            return inner

        def behavior(request: Any, context: Any) -> Any:
            self.seen.append(oi.get_current_user())
            return inner.unary_unary(request, context)

        return inner._replace(unary_unary=behavior)


@SAMPLERS
def test_missing_identity_lands_once_on_the_server_span_and_is_counted(sampler: Sampler) -> None:
    provider, exporter = _provider(sampler)
    before = _totals()
    with sync_server(_otel_then_ours(provider)) as target:
        responses = _calls(target)
    assert [(r["user"], r["in_otel_pass"]) for r in responses] == [(None, True)]
    expected = [names.EVENT_MISSING] if sampler is ALWAYS_ON else []
    assert _server_events(exporter) == expected
    assert not [
        e for s in exporter.get_finished_spans() for e in s.events if s.kind is not SpanKind.SERVER
    ]
    assert _delta(before) == {(names.OUTCOME_MISSING,): 1}


@SAMPLERS
def test_anonymous_routes_are_decided_in_the_same_pass(sampler: Sampler) -> None:
    oi.configure(anonymous_routes=HEALTH)
    provider, exporter = _provider(sampler)
    before = _totals()
    with sync_server(_otel_then_ours(provider)) as target:
        _calls(target, method=HEALTH)
    assert [e for s in exporter.get_finished_spans() for e in s.events] == []
    assert _delta(before) == {(names.OUTCOME_ANONYMOUS,): 1}


@SAMPLERS
def test_unsigned_identity_under_verify_is_rejected_in_the_same_pass(sampler: Sampler) -> None:
    oi.configure(inbound="verify", signing_keys="k1:" + "a" * 44)
    provider, exporter = _provider(sampler)
    before = _totals()
    with sync_server(_otel_then_ours(provider)) as target, grpc.insecure_channel(target) as ch:
        # unsigned baggage, as a forger would send it
        responses = call(ch, "UnaryUnary", metadata=[("baggage", "user.id=root,other=kept")])
    assert [(r["user"], r["in_otel_pass"], r["members"]) for r in responses] == [
        (None, True, {"other": "kept"})
    ]
    assert _delta(before) == {(names.OUTCOME_REJECTED, names.REASON_UNTRUSTED): 1}
    if sampler is ALWAYS_ON:
        assert _server_events(exporter) == [names.EVENT_REJECTED, names.EVENT_MISSING]


# -- hostile metadata: the announced path decides exactly as the general path ----------------

HOSTILE: dict[str, list[tuple[str, Any]]] = {
    "look-alike keys": [("baggage", "%75ser.id=mallory,user.id%20=eve,tenant.id=acme")],
    "control characters": [("baggage", "user.id=%0Aroot%00,tenant.id=%7F,other=kept")],
    "refused escape": [("baggage", "user.id=u-1,tenant.id=%ZZ,other=kept")],
    "ambiguous duplicate": [("baggage", "user.id=a,user.id=b,other=kept")],
    "two baggage entries, conflicting": [("baggage", "user.id=a"), ("baggage", "user.id=b")],
    "two baggage entries": [("baggage", "user.id=a"), ("baggage", "tenant.id=b")],
    "oversize": [("baggage", "user.id=" + "x" * 9000 + ",tenant.id=acme")],
    "too many members": [("baggage", ",".join(f"k{i}=v" for i in range(300)) + ",user.id=u")],
    "garbage": [("baggage", "%%%;;;,,,===;=,%zz")],
    "empty": [("baggage", "")],
    "binary": [("baggage-bin", b"\xff\x00\xfe")],
}


def _one_hop(interceptors: list[Any], metadata: list[tuple[str, Any]]) -> tuple[Any, ...]:
    """What the handler saw on one RPC, and how the hop was counted."""
    before = _totals()
    with sync_server(interceptors) as target, grpc.insecure_channel(target) as channel:
        (response,) = call(channel, "UnaryUnary", metadata=metadata)
    seen = (response["user"], response["tenant"], response["members"])
    return seen, _delta(before), response["in_otel_pass"]


@SAMPLERS
@pytest.mark.parametrize("metadata", HOSTILE.values(), ids=list(HOSTILE))
def test_hostile_metadata_is_decided_as_on_the_general_path(
    sampler: Sampler, metadata: list[tuple[str, Any]]
) -> None:
    oi.configure(inbound="trust")
    provider, _ = _provider(sampler)
    general, general_count, _ = _one_hop([oi_grpc.server_interceptor()], metadata)
    announced, announced_count, in_pass = _one_hop(_otel_then_ours(provider), metadata)
    assert announced == general
    assert announced_count == general_count
    assert in_pass is True


def test_two_conflicting_baggage_entries_are_rejected_as_malformed() -> None:
    oi.configure(inbound="trust")
    provider, _ = _provider(ALWAYS_ON)
    metadata = HOSTILE["two baggage entries, conflicting"]
    seen, counted, _ = _one_hop(_otel_then_ours(provider), metadata)
    assert seen == (None, None, {})
    assert counted == {(names.OUTCOME_REJECTED, names.REASON_MALFORMED): 1}


# -- where no such pass runs, ours does the whole hop ------------------------------------------


@SAMPLERS
@pytest.mark.parametrize("interceptors", ["ours only", "ours outside opentelemetry"])
def test_without_opentelemetry_inside_ours_does_the_whole_hop(
    sampler: Sampler, interceptors: str
) -> None:
    # (ours outside OpenTelemetry's interceptor: ours runs first, so it cannot know that an
    # extract follows; it decides the hop itself and OpenTelemetry's extract leaves it alone)
    provider, _ = _provider(sampler)
    chain = [oi_grpc.server_interceptor()]
    if interceptors != "ours only":
        chain.append(otel_grpc.server_interceptor(tracer_provider=provider))
    before = _totals()
    with sync_server(chain) as target:
        responses = _calls(target, 2, user_id="u-7", tenant_id="acme")
    assert [(r["user"], r["in_otel_pass"]) for r in responses] == [("u-7", False)] * 2
    assert _delta(before) == {(names.OUTCOME_PRESENT,): 2}  # counted once per RPC, not twice


def test_opentelemetrys_own_baggage_step_leaves_the_hop_to_ours() -> None:
    provider, _ = _provider(ALWAYS_ON)
    with sync_server(_otel_then_ours(provider)) as target:
        assert _calls(target, user_id="u-7")[0]["in_otel_pass"] is True
        # A textmap swapped at run time is seen on the next call.
        propagate.set_global_textmap(
            CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
        )
        before = _totals()
        responses = _calls(target, user_id="u-7")
    assert [(r["user"], r["in_otel_pass"]) for r in responses] == [("u-7", False)]
    assert _delta(before) == {(names.OUTCOME_PRESENT,): 1}


class _ExtractsFirst(grpc.ServerInterceptor):  # type: ignore[misc]
    """An application interceptor outside OpenTelemetry's that extracts the metadata itself
    (and drops the result): it takes the announced hop before OpenTelemetry's extract."""

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        inner = continuation(details)
        if inner is None or inner.unary_unary is None:
            return inner

        def behavior(request: Any, context: Any) -> Any:
            propagate.extract(dict(context.invocation_metadata()))
            return inner.unary_unary(request, context)

        return inner._replace(unary_unary=behavior)


@SAMPLERS
def test_a_hop_another_extract_took_is_done_by_ours_and_counted_once(sampler: Sampler) -> None:
    provider, _ = _provider(sampler)
    before = _totals()
    with sync_server([_ExtractsFirst(), *_otel_then_ours(provider)]) as target:
        responses = _calls(target, 2, user_id="u-7", tenant_id="acme")
    assert [(r["user"], r["in_otel_pass"]) for r in responses] == [("u-7", False)] * 2
    assert _delta(before) == {(names.OUTCOME_PRESENT,): 2}


class _ExtractsInside(grpc.ServerInterceptor):  # type: ignore[misc]
    """An application interceptor inside ours whose behavior reads a queue message's
    headers with ``oi.extract``, as a handler might."""

    def __init__(self) -> None:
        self.states: list[object] = []

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        inner = continuation(details)
        if inner is None or inner.unary_unary is None:
            return inner

        def behavior(request: Any, context: Any) -> Any:
            ctx = oi.extract({"baggage": "user.id=other"}, hop=names.HOP_QUEUE_CONSUME)
            self.states.append(oi.hop_state(ctx))
            propagate.extract({"baggage": "user.id=other"})  # an ordinary extract now
            return inner.unary_unary(request, context)

        return inner._replace(unary_unary=behavior)


def test_an_extract_inside_the_handler_is_not_taken_for_the_hop() -> None:
    provider, _ = _provider(ALWAYS_ON)
    inside = _ExtractsInside()
    before = _totals()
    with sync_server([*_otel_then_ours(provider), inside]) as target:
        responses = _calls(target, user_id="u-7", tenant_id="acme")
    assert [(r["user"], r["in_otel_pass"]) for r in responses] == [("u-7", True)]
    (state,) = inside.states
    assert getattr(state, "hop", None) == names.HOP_QUEUE_CONSUME
    assert _delta(before) == {(names.OUTCOME_PRESENT,): 1}


# -- asyncio: grpc.aio runs the interceptors and the handler in the RPC's own task ----------


def _aio_otel_then_ours(provider: TracerProvider) -> list[Any]:
    return [
        otel_grpc.aio_server_interceptor(tracer_provider=provider),
        oi_grpc.aio_server_interceptor(),
    ]


def _aio_calls(
    interceptors: list[Any] | None,
    n: int = 1,
    shape: str = "UnaryUnary",
    metadata: list[tuple[str, Any]] | None = None,
    **claims: Any,
) -> list[dict[str, Any]]:
    """``n`` calls to a fresh asyncio server (with ``interceptors``, or as instrumented)."""

    async def scenario() -> list[dict[str, Any]]:
        async with aio_server(interceptors or ()) as target:
            client = oi_grpc.aio_client_interceptors(target)
            async with grpc.aio.insecure_channel(target, interceptors=client) as channel:
                with contextlib.ExitStack() as stack:
                    if claims:
                        stack.enter_context(oi.use_identity(**claims))
                    responses: list[dict[str, Any]] = []
                    for _ in range(n):
                        responses.extend(await aio_call(channel, shape, metadata))
                    return responses

    return asyncio.run(scenario())


@SAMPLERS
@pytest.mark.parametrize("shape", SHAPES)
def test_aio_with_opentelemetry_outside_the_hop_is_decided_in_its_extract(
    sampler: Sampler, shape: str
) -> None:
    provider, exporter = _provider(sampler)
    before = _totals()
    responses = _aio_calls(_aio_otel_then_ours(provider), 2, shape, user_id="u-7", tenant_id="b")
    steps = STREAM_LENGTH if shape.endswith("Stream") else 1
    assert [(r["user"], r["in_otel_pass"]) for r in responses] == [("u-7", True)] * 2 * steps
    assert _delta(before) == {(names.OUTCOME_PRESENT,): 2}
    server = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert len(server) == (2 if sampler is ALWAYS_ON else 0)
    assert all(s.attributes and s.attributes.get(names.USER_ID) == "u-7" for s in server)


@SAMPLERS
@pytest.mark.parametrize("opentelemetry_first", [True, False], ids=["otel-first", "ours-first"])
def test_aio_in_either_load_order_the_hop_is_decided_in_opentelemetrys_extract(
    sampler: Sampler, opentelemetry_first: bool
) -> None:
    provider, _ = _provider(sampler)
    ordered: list[Any] = [otel_grpc.GrpcAioInstrumentorServer(), GrpcIdentityInstrumentor()]
    if not opentelemetry_first:
        ordered.reverse()
    for instrumentor in ordered:
        instrumentor.instrument(tracer_provider=provider)
    before = _totals()
    responses = _aio_calls(None, 2, user_id="u-7", tenant_id="acme")
    assert [(r["user"], r["in_otel_pass"]) for r in responses] == [("u-7", True)] * 2
    assert _delta(before) == {(names.OUTCOME_PRESENT,): 2}


@SAMPLERS
def test_aio_missing_identity_lands_once_on_the_server_span_and_is_counted(
    sampler: Sampler,
) -> None:
    provider, exporter = _provider(sampler)
    before = _totals()
    responses = _aio_calls(_aio_otel_then_ours(provider), shape="UnaryStream")
    assert {(r["user"], r["in_otel_pass"]) for r in responses} == {(None, True)}
    assert _server_events(exporter) == ([names.EVENT_MISSING] if sampler is ALWAYS_ON else [])
    assert _delta(before) == {(names.OUTCOME_MISSING,): 1}


@SAMPLERS
@pytest.mark.parametrize("metadata", HOSTILE.values(), ids=list(HOSTILE))
def test_aio_hostile_metadata_is_decided_as_on_the_general_path(
    sampler: Sampler, metadata: list[tuple[str, Any]]
) -> None:
    oi.configure(inbound="trust")
    provider, _ = _provider(sampler)

    def one_hop(interceptors: list[Any]) -> tuple[Any, ...]:
        before = _totals()
        (response,) = _aio_calls(interceptors, metadata=metadata)
        seen = (response["user"], response["tenant"], response["members"])
        return seen, _delta(before), response["in_otel_pass"]

    general = one_hop([oi_grpc.aio_server_interceptor()])
    announced = one_hop(_aio_otel_then_ours(provider))
    assert announced[:2] == general[:2]
    assert (general[2], announced[2]) == (False, True)


@SAMPLERS
@pytest.mark.parametrize("interceptors", ["ours only", "ours outside opentelemetry"])
def test_aio_without_opentelemetry_inside_ours_does_the_whole_hop(
    sampler: Sampler, interceptors: str
) -> None:
    provider, _ = _provider(sampler)
    chain = [oi_grpc.aio_server_interceptor()]
    if interceptors != "ours only":
        chain.append(otel_grpc.aio_server_interceptor(tracer_provider=provider))
    before = _totals()
    responses = _aio_calls(chain, 2, user_id="u-7", tenant_id="acme")
    assert [(r["user"], r["in_otel_pass"]) for r in responses] == [("u-7", False)] * 2
    assert _delta(before) == {(names.OUTCOME_PRESENT,): 2}
