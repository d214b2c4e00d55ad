"""HTTP round trips on loopback: OpenTelemetry-instrumented baseline against the same plus
otel-identity, measured in one run, interleaved.

    python benchmarks/bench_http.py [--quick]

baseline = requests (RequestsInstrumentor) -> threaded werkzeug server (another process) with
           OpenTelemetry's WSGI middleware, SDK tracer providers on both sides, two baggage
           members (user.id, tenant.id) on every request
ours     = the same plus HttpClientIdentityInstrumentor (transport egress check) on the client,
           IdentityWSGIMiddleware (outermost, so its re-attach tap runs too) on the server, and
           IdentitySpanProcessor on both sides
plain    = requests -> werkzeug without any instrumentation, for scale

HTTP/1.1 keep-alive on one session, so a round trip is the request, not connection setup.
The configurations run round-robin in small blocks, so drift hits them alike.
"""

from __future__ import annotations

import logging
import multiprocessing
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import requests
from opentelemetry import trace
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from otel_identity_http import HttpClientIdentityInstrumentor, IdentityWSGIMiddleware
from werkzeug.serving import WSGIRequestHandler, make_server

import otel_identity as oi


def _app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def _serve(ports: Any, stop: Any) -> None:
    """The server process: plain, baseline and ours, each on its own port."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    oi.configure(inbound="trust")
    baseline_provider = TracerProvider()
    ours_provider = TracerProvider()
    ours_provider.add_span_processor(oi.IdentitySpanProcessor())
    WSGIRequestHandler.protocol_version = "HTTP/1.1"  # keep-alive
    apps = {
        "plain": _app,
        "baseline": OpenTelemetryMiddleware(_app, tracer_provider=baseline_provider),
        "ours": IdentityWSGIMiddleware(
            OpenTelemetryMiddleware(_app, tracer_provider=ours_provider)
        ),
    }
    servers = {name: make_server("127.0.0.1", 0, app, threaded=True) for name, app in apps.items()}
    threads = [
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        for server in servers.values()
    ]
    for thread in threads:
        thread.start()
    ports.put({name: server.server_port for name, server in servers.items()})
    stop.wait(600)  # bounded: the parent sets it; a lost parent ends it after ten minutes
    for server in servers.values():
        server.shutdown()
        server.server_close()


@contextmanager
def _servers() -> Iterator[dict[str, str]]:
    context = multiprocessing.get_context("spawn")
    ports = context.Queue()
    stop = context.Event()
    process = context.Process(target=_serve, args=(ports, stop), daemon=True)
    process.start()
    try:
        found = ports.get(timeout=60)
        yield {name: f"http://127.0.0.1:{port}/orders" for name, port in found.items()}
    finally:
        stop.set()
        process.join(10)


def _percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main() -> None:
    quick = "--quick" in sys.argv
    rounds, block = (40, 50) if quick else (200, 50)
    provider = TracerProvider()
    identity_processor = oi.IdentitySpanProcessor()
    provider.add_span_processor(identity_processor)
    trace.set_tracer_provider(provider)
    oi.configure(inbound="trust")
    RequestsInstrumentor().instrument()
    client_identity = HttpClientIdentityInstrumentor()

    with ExitStack() as stack:
        urls = stack.enter_context(_servers())
        session = stack.enter_context(requests.Session())
        plain_session = stack.enter_context(requests.Session())
        # A session OpenTelemetry's instrumentation leaves alone, for scale.
        RequestsInstrumentor().uninstrument_session(plain_session)
        samples: dict[str, list[float]] = {name: [] for name in urls}
        per_round: list[float] = []  # ours p50 / baseline p50 of the same round

        def run(name: str, count: int, record: Callable[[float], None] | None) -> None:
            if name == "ours":
                client_identity.instrument()
            identity_processor.enabled = name == "ours"
            try:
                url = urls[name]
                get = (plain_session if name == "plain" else session).get
                for _ in range(count):
                    start = time.perf_counter_ns()
                    get(url, timeout=10)
                    if record is not None:
                        record((time.perf_counter_ns() - start) / 1000)
            finally:
                if name == "ours":
                    client_identity.uninstrument()

        with oi.use_identity(user_id="u-42", tenant_id="acme"):
            for name in urls:  # warm up connections and caches
                run(name, 300, None)
            for index in range(rounds):
                # Alternate which of the two goes first, so neither always follows "plain".
                order = (
                    ("baseline", "ours", "plain") if index % 2 else ("ours", "baseline", "plain")
                )
                for name in order:
                    run(name, block, samples[name].append)
                base_block = sorted(samples["baseline"][-block:])
                ours_block = sorted(samples["ours"][-block:])
                per_round.append(statistics.median(ours_block) / statistics.median(base_block))

    stats = {}
    for name, values in samples.items():
        values.sort()
        stats[name] = (statistics.median(values), _percentile(values, 0.99))
    print(f"HTTP round trip on loopback (requests -> werkzeug), {rounds * block} per configuration")
    print(f"{'configuration':<14}{'p50 us':>10}{'p99 us':>10}")
    for name in ("plain", "baseline", "ours"):
        p50, p99 = stats[name]
        print(f"{name:<14}{p50:>10.1f}{p99:>10.1f}")
    (b50, b99), (o50, o99) = stats["baseline"], stats["ours"]
    print(
        f"ours / baseline: p50 {o50 / b50:.3f} ({(o50 / b50 - 1) * 100:+.1f}%), "
        f"p99 {o99 / b99:.3f} ({(o99 / b99 - 1) * 100:+.1f}%)"
    )
    paired = statistics.median(per_round)
    print(f"ours / baseline, median of per-round p50 ratios: {paired:.3f} ({(paired - 1):+.1%})")
    print(f"goal p50 overhead <= 3%: {'met' if o50 / b50 <= 1.03 else 'NOT met'}")


if __name__ == "__main__":
    main()
