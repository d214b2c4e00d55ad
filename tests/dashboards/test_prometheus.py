"""The rules and every Grafana panel query against a real Prometheus scraping the demo.

A Prometheus (Debian package ``prometheus``) on a free loopback port scrapes the demo's
metrics every second while ``otel-identity demo --prometheus ... --linger ...`` keeps its flow
running, with the shipped recording and alerting rules loaded. The demo has one deliberately
broken hop (a legacy cron job queues work without identity), so the queue consumer's coverage
is 3 hops in 4 and every other required hop has full coverage.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from otel_identity import _dashboards
from tests.services import need_tool

SHIPPED = Path(_dashboards.__file__).parent / "dashboards"
JOB = "otel-identity-demo"  # the scrape job: the service label of every rule
LINGER = 40  # seconds of demo traffic; the test stops waiting as soon as the rules have data


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_ready(url: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:  # refused, or 503 while the storage opens
            pass
        time.sleep(0.2)
    raise AssertionError(f"Prometheus never became ready on {url}")


class Prometheus:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as reply:
            body = json.load(reply)
        assert body["status"] == "success", (expr, body)
        return list(body["data"]["result"])

    def values(self, expr: str, *labels: str) -> dict[tuple[str, ...], float]:
        """``expr``'s instant vector as {label values: value}."""
        return {
            tuple(r["metric"].get(label, "") for label in labels): float(r["value"][1])
            for r in self.query(expr)
        }

    def alerts(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.url}/api/v1/alerts", timeout=10) as reply:
            return list(json.load(reply)["data"]["alerts"])


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """Prometheus scraping the demo (which is running, lingering, while the tests query)."""
    binary = need_tool("prometheus", "prometheus")
    tmp = tmp_path_factory.mktemp("prometheus")
    demo_port, port = free_port(), free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(SHIPPED / _dashboards.RULES), str(SHIPPED / _dashboards.ALERTS)],
        "scrape_configs": [
            {"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{demo_port}"]}]}
        ],
    }
    (tmp / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    logs = (tmp / "prometheus.log").open("w")
    server = subprocess.Popen(
        # timeout(1): bounded even if this test process dies without its teardown
        ["timeout", "300", binary, f"--config.file={tmp / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=logs, stderr=subprocess.STDOUT,
    )  # fmt: skip
    demo = subprocess.Popen(
        [sys.executable, "-m", "otel_identity._cli", "demo",
         "--prometheus", f"127.0.0.1:{demo_port}", "--linger", str(LINGER)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        result = Prometheus(port)
        wait_until_ready(result.url, time.monotonic() + 30)
        yield result
    finally:
        for process in (demo, server):
            process.kill()
            process.wait(timeout=10)
        if demo.stdout is not None:
            demo.stdout.close()
        logs.close()


@pytest.fixture(scope="module")
def scraped(prometheus: Prometheus) -> Prometheus:
    """The Prometheus once every recording rule the demo can feed has a value."""
    wanted = [
        'otel_identity:coverage:ratio_rate5m{identity_hop="queue.consume"}',
        'otel_identity:coverage:ratio_rate5m{identity_hop="http.server"}',
        "otel_identity:resolve_duration_seconds:p99_5m",
    ]
    deadline = time.monotonic() + LINGER - 5  # well before the demo stops its traffic
    while time.monotonic() < deadline:
        if all(prometheus.query(expr) for expr in wanted):
            time.sleep(3)  # a few more rounds, so each rate spans several
            return prometheus
        time.sleep(0.5)
    raise AssertionError("Prometheus never computed the coverage rules from the demo")


def test_the_demo_is_scraped_as_its_own_service(scraped: Prometheus) -> None:
    assert scraped.values("up", "job") == {(JOB,): 1.0}
    assert scraped.values("target_info", "job", "service_name") == {(JOB, JOB): 1.0}


def test_coverage_per_service_and_hop_kind(scraped: Prometheus) -> None:
    coverage = scraped.values("otel_identity:coverage:ratio_rate5m", "job", "identity_hop")
    assert coverage[(JOB, "http.server")] == 1.0
    assert coverage[(JOB, "grpc.server")] == 1.0
    # the broken hop: 1 of the 4 jobs a round queues arrives without identity
    assert coverage[(JOB, "queue.consume")] == pytest.approx(0.75, abs=0.05)
    # threads: the 3 fan-out branches have identity; pool threads started outside any
    # request do not (thread is not a required hop kind, so no alert reads it)
    assert 0 < coverage[(JOB, "thread")] < 1
    assert set(coverage) == {
        (JOB, h) for h in ("http.server", "grpc.server", "queue.consume", "thread")
    }


def test_hop_rates_by_outcome(scraped: Prometheus) -> None:
    rates = scraped.values("otel_identity:hops:rate5m", "identity_hop", "identity_outcome")
    # per round: one request (http.server, grpc.server), 3 queued jobs with identity, 1 without
    assert rates[("http.server", "present")] == pytest.approx(rates[("grpc.server", "present")])
    assert rates[("queue.consume", "present")] == pytest.approx(
        3 * rates[("queue.consume", "missing")], rel=0.2
    )
    assert rates[("queue.consume", "missing")] == pytest.approx(
        rates[("http.server", "present")], rel=0.2
    )
    assert ("http.server", "missing") not in rates
    assert not any(outcome == "rejected" for _, outcome in rates)


def test_nothing_is_rejected_stripped_or_failing_in_the_demo(scraped: Prometheus) -> None:
    for rule in (
        "otel_identity:rejected:rate5m",
        "otel_identity:egress_stripped:rate5m",
        "otel_identity:resolve_failures:rate5m",
    ):
        assert scraped.query(rule) == [], rule
    assert scraped.values("otel_identity:resolve_calls:rate5m", "job")[(JOB,)] > 0


def test_resolver_latency_quantiles_are_ordered_and_plausible(scraped: Prometheus) -> None:
    quantiles = [
        scraped.values(f"otel_identity:resolve_duration_seconds:{q}_5m", "job")[(JOB,)]
        for q in ("p50", "p95", "p99")
    ]
    assert 0 < quantiles[0] <= quantiles[1] <= quantiles[2] < 1.0  # an SQLite lookup


def panel_queries() -> list[tuple[str, str]]:
    model = json.loads(_dashboards.read(_dashboards.DASHBOARD))
    return [
        (panel["title"], target["expr"].replace("$service", ".*"))
        for panel in model["panels"]
        for target in panel.get("targets", [])
    ]


@pytest.mark.parametrize(("title", "expr"), panel_queries())
def test_every_panel_query_runs_and_matches_the_demo(
    scraped: Prometheus, title: str, expr: str
) -> None:
    result = scraped.values(expr, "job", "identity_hop", "identity_outcome")
    expected = {
        "Identity coverage by service": {(JOB, "", "")},
        "Coverage by service and hop kind": {
            (JOB, hop, "") for hop in ("http.server", "grpc.server", "queue.consume", "thread")
        },
        "Top reject reasons": set(),
        "Egress strips": set(),
        "User resolver failures": set(),
        "User resolver latency": {(JOB, "", "")},
    }
    if title == "Hops without identity (missing, rejected)":
        assert (JOB, "queue.consume", "missing") in result
        assert {key[2] for key in result} == {"missing"}
    else:
        assert set(result) == expected[title], title
    assert all(math.isfinite(v) and v >= 0 for v in result.values())
    if title == "Identity coverage by service":
        assert 0 < result[(JOB, "", "")] < 1  # the lost queue hops pull it under 100%


def test_the_coverage_alert_is_pending_for_the_broken_hop_only(scraped: Prometheus) -> None:
    alerts = [a for a in scraped.alerts() if a["labels"]["alertname"] == "OtelIdentityCoverageLow"]
    assert [(a["labels"]["job"], a["labels"]["identity_hop"], a["state"]) for a in alerts] == [
        (JOB, "queue.consume", "pending")  # firing only after 15 minutes
    ]
