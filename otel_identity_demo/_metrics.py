"""``otel-identity demo --prometheus HOST:PORT``: the demo's metrics for a real Prometheus.

OpenTelemetry's Prometheus exporter serves the metrics of the whole demo process. The demo's
services (web, reports, workflows, worker) share that process, so they share one resource and
one ``service.name``: ``otel-identity-demo``, or ``$OTEL_SERVICE_NAME`` when set (two demos
then look like two services). The core counts hops per process, as a real deployment (one
service per process) needs, and in the demo each hop kind belongs to one service
(http.server: reports, grpc.server and thread: workflows, queue.consume: worker).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import IO

SERVICE_NAME = "otel-identity-demo"


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as (host, port); ValueError says what is wrong."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--prometheus wants HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


@contextlib.contextmanager
def serving(address: str | None, out: IO[str]) -> Iterator[bool]:
    """Serve the metrics on ``address`` for the duration (nothing when None); False when the
    endpoint cannot be served (the reason is written to ``out``)."""
    if address is None:
        yield True
        return
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import start_http_server
    except ImportError as exc:
        out.write(f"--prometheus needs: pip install 'otel-identity[prometheus]' ({exc})\n")
        yield False
        return
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource

    if isinstance(metrics.get_meter_provider(), MeterProvider):
        out.write("otel-identity demo: --prometheus needs a process without a meter provider\n")
        yield False
        return
    try:
        host, port = parse_address(address)
        server, thread = start_http_server(port, addr=host)
    except (ValueError, OSError) as exc:
        out.write(f"otel-identity demo: cannot serve metrics on {address}: {exc}\n")
        yield False
        return
    reader = PrometheusMetricReader()
    service = os.environ.get("OTEL_SERVICE_NAME") or SERVICE_NAME
    provider = MeterProvider(
        metric_readers=[reader], resource=Resource.create({"service.name": service})
    )
    metrics.set_meter_provider(provider)
    out.write(f"serving metrics on http://{address}/metrics\n")
    try:
        yield True
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        provider.shutdown()
