"""The rules and every Grafana panel query against a real Prometheus scraping the demo.

A Prometheus (Debian package ``prometheus``) on a free loopback port scrapes the metrics of
two demo processes every second while ``otel-identity demo --prometheus ... --linger ...``
keeps their flows running, with the shipped recording and alerting rules loaded. Each demo
process is one service (``OTEL_SERVICE_NAME``; its scrape job has the same name), so every
figure below is checked per service. The demo has one deliberately broken hop (a legacy cron
job queues work without identity), so the queue consumer's coverage is 3 hops in 4 and every
other required hop has full coverage.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
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
JOBS = ("shop", "billing")  # two demo processes: the scrape jobs, and their service.name
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
    demo_ports, port = {job: free_port() for job in JOBS}, free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(SHIPPED / _dashboards.RULES), str(SHIPPED / _dashboards.ALERTS)],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{demo_port}"]}]}
            for job, demo_port in demo_ports.items()
        ],
    }
    (tmp / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    logs = (tmp / "prometheus.log").open("w")
    server = subprocess.Popen(
        # timeout(1): bounded even if this test process dies without its teardown
        ["timeout", "300", binary, f"--config.file={tmp / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=logs, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    demos = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "otel_identity._cli",
                "demo",
                "--prometheus",
                f"127.0.0.1:{demo_port}",
                "--linger",
                str(LINGER),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OTEL_SERVICE_NAME": job},
        )
        for job, demo_port in demo_ports.items()
    ]
    try:
        result = Prometheus(port)
        wait_until_ready(result.url, time.monotonic() + 30)
        yield result
    finally:
        for process in demos:
            process.kill()
            process.wait(timeout=10)
        stop_group(server)
        logs.close()


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stop timeout(1) and the Prometheus under it: the whole process group it leads."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def scraped(prometheus: Prometheus) -> Prometheus:
    """The Prometheus once every recording rule the demo can feed has a value."""
    wanted = [
        'otel_identity:coverage:ratio_rate5m{identity_hop="queue.consume"}',
        'otel_identity:coverage:ratio_rate5m{identity_hop="http.server"}',
        "otel_identity:resolve_duration_seconds:p99_5m",
    ]
    deadline = time.monotonic() + LINGER - 5  # well before the demos stop their traffic
    while time.monotonic() < deadline:
        if all(len(prometheus.query(expr)) == len(JOBS) for expr in wanted):
            time.sleep(3)  # a few more rounds, so each rate spans several
            return prometheus
        time.sleep(0.5)
    raise AssertionError("Prometheus never computed the coverage rules from the demo")


def test_each_demo_is_scraped_as_its_own_service(scraped: Prometheus) -> None:
    assert scraped.values("up", "job") == {(job,): 1.0 for job in JOBS}
    assert scraped.values("target_info", "job", "service_name") == {(job, job): 1.0 for job in JOBS}


HOPS = ("http.server", "grpc.server", "queue.consume", "thread")


def test_coverage_per_service_and_hop_kind(scraped: Prometheus) -> None:
    coverage = scraped.values("otel_identity:coverage:ratio_rate5m", "job", "identity_hop")
    assert set(coverage) == {(job, hop) for job in JOBS for hop in HOPS}
    for job in JOBS:
        assert coverage[(job, "http.server")] == 1.0
        assert coverage[(job, "grpc.server")] == 1.0
        # the broken hop: 1 of the 4 jobs a round queues arrives without identity
        assert coverage[(job, "queue.consume")] == pytest.approx(0.75, abs=0.05)
        # threads: the 3 fan-out branches have identity; pool threads started outside any
        # request do not (thread is not a required hop kind, so no alert reads it)
        assert 0 < coverage[(job, "thread")] < 1


def test_hop_rates_by_outcome_per_service(scraped: Prometheus) -> None:
    rates = scraped.values("otel_identity:hops:rate5m", "job", "identity_hop", "identity_outcome")
    for job in JOBS:
        # per round: one request (http.server, grpc.server), 3 queued jobs with identity and
        # 1 without
        requests = rates[(job, "http.server", "present")]
        assert requests > 0
        assert rates[(job, "grpc.server", "present")] == pytest.approx(requests, rel=0.2)
        assert rates[(job, "queue.consume", "present")] == pytest.approx(3 * requests, rel=0.2)
        assert rates[(job, "queue.consume", "missing")] == pytest.approx(requests, rel=0.2)
        assert (job, "http.server", "missing") not in rates
    assert not any(outcome == "rejected" for _, _, outcome in rates)


def test_nothing_is_rejected_stripped_or_failing_in_the_demo(scraped: Prometheus) -> None:
    for rule in (
        "otel_identity:rejected:rate5m",
        "otel_identity:egress_stripped:rate5m",
        "otel_identity:resolve_failures:rate5m",
    ):
        assert scraped.query(rule) == [], rule
    calls = scraped.values("otel_identity:resolve_calls:rate5m", "job")
    assert set(calls) == {(job,) for job in JOBS}
    assert all(rate > 0 for rate in calls.values())


def test_resolver_latency_quantiles_are_ordered_and_plausible(scraped: Prometheus) -> None:
    for job in JOBS:
        quantiles = [
            scraped.values(f"otel_identity:resolve_duration_seconds:{q}_5m", "job")[(job,)]
            for q in ("p50", "p95", "p99")
        ]
        assert 0 < quantiles[0] <= quantiles[1] <= quantiles[2] < 1.0  # an SQLite lookup


def panel_queries() -> list[tuple[str, str]]:
    model = json.loads(_dashboards.read(_dashboards.DASHBOARD))
    return [
        (panel["title"], target["expr"])
        for panel in model["panels"]
        for target in panel.get("targets", [])
    ]


PER_SERVICE = {(job, "", "") for job in JOBS}
EXPECTED_SERIES = {
    "Identity coverage by service": PER_SERVICE,
    "Coverage by service and hop kind": {(job, hop, "") for job in JOBS for hop in HOPS},
    "Top reject reasons": set(),
    "Egress strips": set(),
    "User resolver failures": set(),
    "User resolver latency": PER_SERVICE,
}


@pytest.mark.parametrize(("title", "expr"), panel_queries())
def test_every_panel_query_runs_and_matches_the_demo(
    scraped: Prometheus, title: str, expr: str
) -> None:
    labels = ("job", "identity_hop", "identity_outcome")
    result = scraped.values(expr.replace("$service", ".*"), *labels)  # "All" services
    if title == "Hops without identity (missing, rejected)":
        assert {(job, "queue.consume", "missing") for job in JOBS} <= set(result)
        assert {key[2] for key in result} == {"missing"}
    else:
        assert set(result) == EXPECTED_SERIES[title], title
    assert all(math.isfinite(v) and v >= 0 for v in result.values())
    if title == "Identity coverage by service":
        assert all(0 < v < 1 for v in result.values())  # the lost queue hops pull it under 1
    # the service variable narrows every panel to the chosen service
    one = scraped.values(expr.replace("$service", JOBS[0]), *labels)
    if title == "Top reject reasons":  # summed over services: no job label to compare
        assert one == result == {}
    else:
        assert set(one) == {key for key in result if key[0] == JOBS[0]}


def test_the_coverage_alert_is_pending_for_the_broken_hop_only(scraped: Prometheus) -> None:
    alerts = [a for a in scraped.alerts() if a["labels"]["alertname"] == "OtelIdentityCoverageLow"]
    assert sorted(
        (a["labels"]["job"], a["labels"]["identity_hop"], a["state"]) for a in alerts
    ) == [
        (job, "queue.consume", "pending")
        for job in sorted(JOBS)  # firing after 15 minutes
    ]
