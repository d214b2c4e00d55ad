"""The floor under the round-trip goals: the least a Python identity hop of this shape costs.

    python benchmarks/bench_floor.py [grpc | http] [--quick | --rounds N]

The same loopback round trips as bench_grpc.py and bench_http.py (same baselines, servers and
clients; both unless one is named), with one more configuration beside ``ours``:

floor = the baseline plus the smallest code that still moves an identity over the hop the way
        otel-identity must (a client-side wrapper, a server-side wrapper that attaches a
        context for the handler, a span processor that stamps every span), each doing only one
        memo lookup: the server looks the baggage header up in a dict and attaches the current
        context plus one entry; the processor copies a precomputed attribute dict into the
        span; the client checks the context's baggage and calls through. No inbound policy, no
        hop accounting, no per-hop ``current_user`` slot, no egress decision per destination,
        no suppression, no events, no settings, no streaming responses. It is a yardstick, not
        a way to run: it answers how much of a goal is left once the mere presence of a hop is
        paid for.

``floor``'s ratio to the baseline is the share of the goal that no feature of otel-identity can
use; what ``ours`` adds beyond it is what its features cost.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import _roundtrip
import bench_grpc
import bench_http
import grpc
import requests
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.baggage import _BAGGAGE_KEY
from opentelemetry.context import Context
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import Span, SpanProcessor, TracerProvider
from otel_identity_grpc import GrpcIdentityInstrumentor
from otel_identity_http import HttpClientIdentityInstrumentor

import otel_identity as oi

CONFIGS = ("floor", "baseline", "baseline-b", "ours")
# The context variable behind OpenTelemetry's context API (the SDK's default runtime context),
# used directly as otel-identity's hot paths do.
_current: Any = otel_context._RUNTIME_CONTEXT._current_context  # type: ignore[attr-defined]
_IDENTITY = "floor-identity"
_ATTRIBUTES = {"user.id": "u-42", "tenant.id": "acme", "identity.verified": False}
_by_claims = {("u-42", "acme"): _ATTRIBUTES}  # what a decoded baggage stamps
_by_header: dict[object, dict[str, object]] = {}  # what a baggage header attaches


class FloorProcessor(SpanProcessor):
    """Stamps the identity of the parent context: one lookup, one dict update."""

    enabled = True

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if not self.enabled:
            return
        ctx = parent_context if parent_context is not None else _current.get()
        attributes = ctx.get(_IDENTITY)
        if attributes is None:  # baggage a propagator decoded (the server span's parent)
            baggage = ctx.get(_BAGGAGE_KEY)
            if not baggage:
                return
            attributes = _by_claims.get((baggage.get("user.id"), baggage.get("tenant.id")))
            if attributes is None:
                return
        span._attributes._dict.update(attributes)  # type: ignore[union-attr]


class FloorServerInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Attaches the base context plus the header's identity for the handler (unary only)."""

    def __init__(self) -> None:
        self._wrapped: dict[Any, Any] = {}  # handler -> wrapped, made once as otel-identity does

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        wrapped = self._wrapped.get(handler)
        if wrapped is None:
            wrapped = self._wrapped[handler] = self._wrap(handler)
        return wrapped

    @staticmethod
    def _wrap(handler: Any) -> Any:
        behavior = handler.unary_unary

        def run(request: Any, servicer_context: Any) -> Any:
            header = dict(servicer_context.invocation_metadata()).get("baggage")
            entries = _by_header.get(header)
            if entries is None:
                entries = _by_header[header] = {_IDENTITY: _ATTRIBUTES}
            token = _current.set(Context({**_current.get(), **entries}))
            try:
                return behavior(request, servicer_context)
            finally:
                _current.reset(token)

        return grpc.unary_unary_rpc_method_handler(
            run,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class _FloorCallable:
    """A channel's callable that looks at the context's baggage before each call."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._sent: object = None

    def __call__(self, request: Any, **kwargs: Any) -> Any:
        baggage = _current.get().get(_BAGGAGE_KEY)
        if baggage is not self._sent:
            self._sent = baggage  # where otel-identity decides egress (once per baggage)
        return self._inner(request, **kwargs)


def build(name: str) -> tuple[int, Callable[[], None]]:
    """bench_grpc.build, and the gRPC floor."""
    if name != "floor":
        return bench_grpc.build(name)
    provider = TracerProvider()
    provider.add_span_processor(FloorProcessor())
    otel_interceptor = bench_grpc.otel_grpc.server_interceptor(tracer_provider=provider)
    return bench_grpc.serve([otel_interceptor, FloorServerInterceptor()])


def connect(name: str, port: int) -> tuple[Callable[[], Any], Callable[[], None]]:
    """bench_grpc.connect, and the gRPC floor."""
    if name != "floor":
        return bench_grpc.connect(name, port)
    with suppress_instrumentation():  # otel-identity's channel patch steps aside
        channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=bench_grpc.OWN_CONNECTION)
    stub = _FloorCallable(channel.unary_unary(bench_grpc.METHOD))
    return (lambda: stub(bench_grpc.PAYLOAD, timeout=10)), channel.close


def _floor_app(app: Callable[..., Any]) -> Callable[..., Any]:
    """A WSGI app that runs ``app`` under the current context plus the header's identity."""

    def run(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        # (the gRPC floor's steps, written out again: a shared helper would add a call)
        header = environ.get("HTTP_BAGGAGE")
        entries = _by_header.get(header)
        if entries is None:
            entries = _by_header[header] = {_IDENTITY: _ATTRIBUTES}
        token = _current.set(Context({**_current.get(), **entries}))
        try:
            return app(environ, start_response)
        finally:
            _current.reset(token)

    return run


def build_http(name: str) -> tuple[int, Callable[[], None]]:
    """bench_http.build, and the HTTP floor (inside OpenTelemetry's WSGI middleware, whose
    context it extends)."""
    if name != "floor":
        return bench_http.build(name)
    provider = TracerProvider()
    provider.add_span_processor(FloorProcessor())
    return bench_http.serve(
        OpenTelemetryMiddleware(_floor_app(bench_http._app), tracer_provider=provider)
    )


def connect_http(name: str, port: int) -> tuple[Callable[[], Any], Callable[[], None]]:
    """bench_http.connect, and the HTTP floor (a session whose ``send`` looks at the baggage)."""
    if name != "floor":
        return bench_http.connect(name, port)
    session = requests.Session()
    send = session.send
    sent: list[object] = [None]

    def floor_send(request: Any, **kwargs: Any) -> Any:
        baggage = _current.get().get(_BAGGAGE_KEY)
        if baggage is not sent[0]:
            sent[0] = baggage  # where otel-identity decides egress (once per baggage)
        return send(request, **kwargs)

    session.send = floor_send  # type: ignore[method-assign]
    url = f"http://127.0.0.1:{port}/orders"
    return (lambda: session.get(url, timeout=10)), session.close


def _run_grpc(settings: _roundtrip.Settings, before: Callable[[str], None]) -> None:
    bench_grpc.otel_grpc.GrpcInstrumentorClient().instrument()
    GrpcIdentityInstrumentor().instrument()  # on for the whole run, as in bench_grpc.py
    results = _roundtrip.measure(build, connect, settings, before, CONFIGS)
    GrpcIdentityInstrumentor().uninstrument()
    bench_grpc.otel_grpc.GrpcInstrumentorClient().uninstrument()
    _roundtrip.report("gRPC unary round trip on loopback, with the floor", results, settings)


def _run_http(settings: _roundtrip.Settings, before: Callable[[str], None]) -> None:
    oi.configure(inbound="trust")
    RequestsInstrumentor().instrument()
    client_identity = HttpClientIdentityInstrumentor()

    def switch(name: str) -> None:  # as bench_http.py: ours's client side only in its blocks
        before(name)
        ours = name == "ours"
        if ours != client_identity.is_instrumented_by_opentelemetry:
            (client_identity.instrument if ours else client_identity.uninstrument)()

    results = _roundtrip.measure(build_http, connect_http, settings, switch, CONFIGS)
    switch("floor")  # leaves otel-identity's client side uninstrumented
    RequestsInstrumentor().uninstrument()
    title = "HTTP round trip on loopback (requests -> werkzeug), with the floor"
    _roundtrip.report(title, results, settings)


def main() -> None:
    settings, identity_processor = _roundtrip.client_setup(sys.argv)
    floor_processor = FloorProcessor()
    provider: Any = trace.get_tracer_provider()
    provider.add_span_processor(floor_processor)

    def before(name: str) -> None:
        identity_processor.enabled = name == "ours"
        floor_processor.enabled = name == "floor"

    chosen = [kind for kind in ("grpc", "http") if kind in sys.argv] or ["grpc", "http"]
    with oi.use_identity(user_id="u-42", tenant_id="acme"):
        if "grpc" in chosen:
            _run_grpc(settings, before)
        if "http" in chosen:
            _run_http(settings, before)


if __name__ == "__main__":
    main()
