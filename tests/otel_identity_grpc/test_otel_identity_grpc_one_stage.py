"""#13 speed work: OpenTelemetry's server interceptor and ours as one stage.

The one stage returns OpenTelemetry's handler as it is where its extract must decide the hop;
these tests prove the outcomes are those of the general path (hostile metadata, sampled and
dropped spans, both load orders of the instrumentors), and that ours still does the whole hop
where OpenTelemetry's interceptor steps aside for a method. A channel's calls send the
baggage and the settings in force at each call.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import grpc.aio
import otel_identity_grpc as oi_grpc
import pytest
from opentelemetry import propagate
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Sampler
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from otel_identity_grpc import GrpcIdentityInstrumentor, _server

import otel_identity as oi
from otel_identity import names
from tests import hop_counts
from tests.baggage_step import SAMPLERS, our_baggage_step  # noqa: F401 - autouse

from .otel_identity_grpc_echo import (
    SHAPES,
    STREAM_LENGTH,
    aio_call,
    aio_server,
    call,
    otel_grpc,
    sync_server,
)
from .test_otel_identity_grpc_otel_pass import HOSTILE


def _provider(sampler: Sampler) -> TracerProvider:
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(oi.IdentitySpanProcessor())
    return provider


def _delta(before: hop_counts.Counts) -> hop_counts.Counts:
    return hop_counts.delta(before, names.HOP_GRPC_SERVER)


def _one_hop(interceptors: list[Any], metadata: list[tuple[str, Any]]) -> tuple[Any, ...]:
    before = hop_counts.totals(names.HOP_GRPC_SERVER)
    with sync_server(interceptors) as target, grpc.insecure_channel(target) as channel:
        (response,) = call(channel, "UnaryUnary", metadata=metadata)
    seen = (response["user"], response["tenant"], response["members"])
    return seen, _delta(before), response["in_otel_pass"]


def _one_stage(provider: TracerProvider, **otel: Any) -> list[Any]:
    opentelemetry = otel_grpc.server_interceptor(tracer_provider=provider, **otel)
    return [oi_grpc.server_interceptor(opentelemetry=opentelemetry)]


@SAMPLERS
@pytest.mark.parametrize("metadata", HOSTILE.values(), ids=list(HOSTILE))
def test_one_stage_decides_hostile_metadata_as_the_general_path(
    sampler: Sampler, metadata: list[tuple[str, Any]]
) -> None:
    oi.configure(inbound="trust")
    general, general_count, _ = _one_hop([oi_grpc.server_interceptor()], metadata)
    fused, fused_count, in_pass = _one_hop(_one_stage(_provider(sampler)), metadata)
    assert (fused, fused_count, in_pass) == (general, general_count, True)


@SAMPLERS
@pytest.mark.parametrize("shape", SHAPES)
def test_one_stage_decides_every_call_shape_in_opentelemetrys_extract(
    sampler: Sampler, shape: str
) -> None:
    before = hop_counts.totals(names.HOP_GRPC_SERVER)
    with sync_server(_one_stage(_provider(sampler))) as target:
        channel = grpc.intercept_channel(
            grpc.insecure_channel(target), oi_grpc.client_interceptor(target)
        )
        with channel, oi.use_identity(user_id="u-7", tenant_id="acme"):
            responses = call(channel, shape) + call(channel, shape)
    steps = STREAM_LENGTH if shape.endswith("Stream") else 1
    assert [(r["user"], r["in_otel_pass"]) for r in responses] == [("u-7", True)] * 2 * steps
    assert _delta(before) == {(names.OUTCOME_PRESENT,): 2}


@SAMPLERS
def test_one_stage_does_the_whole_hop_where_opentelemetry_filters_the_method_out(
    sampler: Sampler,
) -> None:
    # OpenTelemetry's interceptor returns the handler as it was: nothing extracts the request
    provider = _provider(sampler)
    fused = _one_stage(provider, filter_=lambda details: False)
    seen, counted, in_pass = _one_hop(fused, [("baggage", "user.id=u-7,tenant.id=acme")])
    assert (seen[:2], counted, in_pass) == (("u-7", "acme"), {(names.OUTCOME_PRESENT,): 1}, False)
    seen, counted, _ = _one_hop(fused, [])
    assert (seen[:2], counted) == ((None, None), {(names.OUTCOME_MISSING,): 1})


def test_one_stage_leaves_the_hop_to_ours_under_another_baggage_step() -> None:
    from opentelemetry.baggage.propagation import W3CBaggagePropagator

    propagate.set_global_textmap(
        CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
    )
    seen, counted, in_pass = _one_hop(
        _one_stage(_provider(ALWAYS_ON)), [("baggage", "user.id=u-7,tenant.id=acme")]
    )
    assert (seen[:2], counted, in_pass) == (("u-7", "acme"), {(names.OUTCOME_PRESENT,): 1}, False)


@SAMPLERS
@pytest.mark.parametrize("opentelemetry_first", [True, False], ids=["otel-first", "ours-first"])
@pytest.mark.parametrize("metadata", HOSTILE.values(), ids=list(HOSTILE))
def test_hostile_metadata_in_either_load_order_of_the_instrumentors(
    sampler: Sampler, opentelemetry_first: bool, metadata: list[tuple[str, Any]]
) -> None:
    oi.configure(inbound="trust")
    general = _one_hop([oi_grpc.server_interceptor()], metadata)[:2]
    ordered: list[Any] = [otel_grpc.GrpcInstrumentorServer(), GrpcIdentityInstrumentor()]
    if not opentelemetry_first:
        ordered.reverse()
    for instrumentor in ordered:
        instrumentor.instrument(tracer_provider=_provider(sampler))
    assert _one_hop([], metadata) == (*general, True)


class _ExtractsAtLookUp(grpc.ServerInterceptor):  # type: ignore[misc]
    """An application interceptor further in that extracts the metadata while grpc looks the
    handler up (and drops the result): the hop is not announced yet, as with two stages."""

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        propagate.extract(dict(details.invocation_metadata))
        return continuation(details)


@SAMPLERS
def test_an_extract_while_the_handler_is_looked_up_does_not_take_the_hop(
    sampler: Sampler,
) -> None:
    metadata = [("baggage", "user.id=u-7,tenant.id=acme")]
    two_stages = [
        otel_grpc.server_interceptor(tracer_provider=_provider(sampler)),
        oi_grpc.server_interceptor(),
        _ExtractsAtLookUp(),
    ]
    general = _one_hop(two_stages, metadata)
    fused = _one_hop([*_one_stage(_provider(sampler)), _ExtractsAtLookUp()], metadata)
    assert fused == general
    assert fused[1:] == ({(names.OUTCOME_PRESENT,): 1}, True)


@pytest.fixture
def one_stage_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The one-stage interceptors (sync and asyncio) that looked a handler up."""
    seen: list[Any] = []
    for cls in (_server.OpenTelemetryAndIdentity, _server.AioOpenTelemetryAndIdentity):
        real = cls.intercept_service

        def spy(self: Any, continuation: Any, details: Any, real: Any = real) -> Any:
            seen.append(type(self))
            return real(self, continuation, details)

        monkeypatch.setattr(cls, "intercept_service", spy)
    return seen


def test_the_instrumentor_makes_one_stage_of_opentelemetrys_interceptor_listed_first(
    one_stage_calls: list[Any],
) -> None:
    GrpcIdentityInstrumentor().instrument()
    listed = [otel_grpc.server_interceptor(tracer_provider=_provider(ALWAYS_ON))]
    seen, _, in_pass = _one_hop(listed, [("baggage", "user.id=u-7")])
    assert (seen[0], in_pass) == ("u-7", True)
    assert one_stage_calls == [_server.OpenTelemetryAndIdentity]


@pytest.mark.parametrize("aio", [False, True], ids=["sync", "aio"])
def test_ours_loaded_first_makes_one_stage_of_opentelemetrys_interceptor(
    one_stage_calls: list[Any], aio: bool
) -> None:
    theirs = otel_grpc.GrpcAioInstrumentorServer() if aio else otel_grpc.GrpcInstrumentorServer()
    GrpcIdentityInstrumentor().instrument()
    theirs.instrument(tracer_provider=_provider(ALWAYS_ON))
    metadata = [("baggage", "user.id=u-7")]
    if aio:

        async def one_call() -> dict[str, Any]:
            async with aio_server(()) as target, grpc.aio.insecure_channel(target) as channel:
                (response,) = await aio_call(channel, "UnaryUnary", metadata)
            return response

        response = asyncio.run(one_call())
    else:
        with sync_server() as target, grpc.insecure_channel(target) as channel:
            (response,) = call(channel, "UnaryUnary", metadata=metadata)
    assert (response["user"], response["in_otel_pass"]) == ("u-7", True)
    expected = _server.AioOpenTelemetryAndIdentity if aio else _server.OpenTelemetryAndIdentity
    assert one_stage_calls == [expected]


@SAMPLERS
@pytest.mark.parametrize("metadata", HOSTILE.values(), ids=list(HOSTILE))
def test_aio_one_stage_decides_hostile_metadata_as_the_general_path(
    sampler: Sampler, metadata: list[tuple[str, Any]]
) -> None:
    oi.configure(inbound="trust")

    async def one_hop(interceptors: list[Any]) -> tuple[Any, ...]:
        before = hop_counts.totals(names.HOP_GRPC_SERVER)
        async with aio_server(interceptors) as target:
            async with grpc.aio.insecure_channel(target) as channel:
                (response,) = await aio_call(channel, "UnaryUnary", metadata)
        return (response["user"], response["tenant"]), _delta(before), response["in_otel_pass"]

    opentelemetry = otel_grpc.aio_server_interceptor(tracer_provider=_provider(sampler))
    general = asyncio.run(one_hop([oi_grpc.aio_server_interceptor()]))
    fused = asyncio.run(one_hop([oi_grpc.aio_server_interceptor(opentelemetry=opentelemetry)]))
    assert fused == (*general[:2], True)


# -- a channel's calls, each under the baggage and settings in force -------------------------


def _instrumented_channel_calls(target: str, steps: list[Any]) -> list[dict[str, Any]]:
    """One call per step (a callable run before it, under the identity it returns)."""
    otel_grpc.GrpcInstrumentorClient().instrument()
    GrpcIdentityInstrumentor().instrument()
    responses = []
    with grpc.insecure_channel(target) as channel:
        for step in steps:
            with oi.use_identity(**step()):
                responses.extend(call(channel, "UnaryUnary"))
                responses.extend(call(channel, "UnaryUnary"))  # (the same context again)
    return responses


def _signing_on() -> dict[str, str]:
    """New settings: signing on, so what leaves is signed (and verified there)."""
    oi.configure(inbound="verify", signing_keys="k1:" + "a" * 44)
    return {"user_id": "u-3"}


def test_each_call_sends_the_baggage_and_settings_in_force() -> None:
    with sync_server([oi_grpc.server_interceptor()]) as target:
        responses = _instrumented_channel_calls(
            target,
            [lambda: {"user_id": "u-1"}, lambda: {"user_id": "u-2"}, _signing_on],
        )
    users = [(r["user"], "identity.sig" in (r["baggage"] or "")) for r in responses]
    assert users == [("u-1", False)] * 2 + [("u-2", False)] * 2 + [("u-3", True)] * 2


# -- the header the server reads for the announcement: what the getter reads, joined ---------


@pytest.mark.parametrize(
    "metadata",
    [
        [],
        [("user-agent", "grpc-python"), ("baggage", "user.id=u-1")],
        [("baggage", "user.id=a"), ("x", "y"), ("baggage", "user.id=b")],
        [("baggage", ""), ("baggage", "")],
        [("baggage", "")],
        [("baggage-bin", b"\xff"), ("baggage", b"user.id=bytes")],
        [("baggage", "user.id=a"), ("odd",), ["baggage", "tenant.id=t"], 7],
        (("baggage", "user.id=a"), ("baggage", "user.id=a")),
    ],
)
def test_the_announced_header_is_what_the_getter_reads_joined(metadata: Any) -> None:
    from otel_identity_grpc import _metadata

    from otel_identity import _propagation

    expected = _propagation.joined(_metadata.getter.get(metadata, "baggage")) or ""
    assert _metadata.header(metadata, "baggage") == expected
