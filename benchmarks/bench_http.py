"""HTTP round trips on loopback: OpenTelemetry-instrumented baseline against the same plus
otel-identity, measured in one run, interleaved.

    python benchmarks/bench_http.py [--quick | --rounds N]

baseline = requests (RequestsInstrumentor) -> threaded werkzeug server (another process) with
           OpenTelemetry's WSGI middleware, SDK tracer providers on both sides, two baggage
           members (user.id, tenant.id) on every request
ours     = the same plus HttpClientIdentityInstrumentor (transport egress check) on the client,
           IdentityWSGIMiddleware (outermost, so its re-attach tap runs too) on the server, and
           IdentitySpanProcessor on both sides
plain    = requests -> werkzeug without any instrumentation, for scale

One session per server. Werkzeug 3 closes every connection after one response (its
development server does not do keep-alive), so each round trip also opens a connection and
starts a server thread, for every configuration alike. How rounds, servers and the noise
floor are handled: see _roundtrip.py.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

import _roundtrip
import requests
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from otel_identity_http import HttpClientIdentityInstrumentor, IdentityWSGIMiddleware
from werkzeug.serving import make_server

import otel_identity as oi


def _app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def build(name: str) -> tuple[int, Callable[[], None]]:
    """One configuration's server, in the server process."""
    oi.configure(inbound="trust")
    app: Any = _app
    if name != "plain":
        provider = TracerProvider()
        if name == "ours":
            provider.add_span_processor(oi.IdentitySpanProcessor())
        app = OpenTelemetryMiddleware(_app, tracer_provider=provider)
        if name == "ours":
            app = IdentityWSGIMiddleware(app)
    return serve(app)


def serve(app: Any) -> tuple[int, Callable[[], None]]:
    """A threaded werkzeug server for ``app``, started on a free loopback port."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()

    def close() -> None:
        server.shutdown()
        server.server_close()

    return server.server_port, close


def connect(name: str, port: int) -> tuple[Callable[[], Any], Callable[[], None]]:
    """A client session of configuration ``name``: (one request, close)."""
    session = requests.Session()
    if name == "plain":
        RequestsInstrumentor().uninstrument_session(session)  # OpenTelemetry leaves it alone
    url = f"http://127.0.0.1:{port}/orders"
    return (lambda: session.get(url, timeout=10)), session.close


def main() -> None:
    settings, identity_processor = _roundtrip.client_setup(sys.argv)
    oi.configure(inbound="trust")
    RequestsInstrumentor().instrument()
    client_identity = HttpClientIdentityInstrumentor()

    def before(name: str) -> None:
        # The client side of ours is on only for its own blocks (untimed switches).
        identity_processor.enabled = ours = name == "ours"
        if ours != client_identity.is_instrumented_by_opentelemetry:
            (client_identity.instrument if ours else client_identity.uninstrument)()

    with oi.use_identity(user_id="u-42", tenant_id="acme"):
        results = _roundtrip.measure(build, connect, settings, before)
    before("plain")  # leaves the client uninstrumented
    _roundtrip.report("HTTP round trip on loopback (requests -> werkzeug)", results, settings)


if __name__ == "__main__":
    main()
