"""Zero code, end to end: two real services under ``opentelemetry-instrument``, configured
only by environment, exporting their spans with OpenTelemetry's console exporter.

A Flask + Flask-Login ``edge`` (a thread pool, then a gRPC call) and a gRPC ``workflows``
service (a thread pool per call, then a ``requests`` call to its own Flask ``audit``
endpoint) carry no identity code at all (``apps/``). A ``cron`` job calls
``workflows`` with nobody logged in. What a newcomer is promised: the edge's server span has
the user, every span downstream has it, ``current_user`` is rebuilt by the resolver in each
hop's own thread, the cron hop says ``identity.missing``, and ``otel-identity report`` shows
full coverage on the authenticated paths.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from otel_identity import _report, names

APPS = Path(__file__).parent / "apps"
BIN = Path(sys.executable).parent
KEY = base64.b64encode(b"zero-code-test-key-0123456789").decode()
# Only what a deployment would set: exporters, service names, OTEL_IDENTITY_*.
COMMON = {
    "OTEL_TRACES_EXPORTER": "console",
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_LOGS_EXPORTER": "none",
    "OTEL_BSP_SCHEDULE_DELAY": "50",
    "OTEL_IDENTITY_RESOLVER": "zc_users:resolve",
    "OTEL_IDENTITY_SIGNING_KEYS": f"k1:{KEY}",
}
EDGE = {
    "OTEL_SERVICE_NAME": "edge",
    "OTEL_IDENTITY_INBOUND": "strip",  # faces the internet: identity comes from its login
    "OTEL_IDENTITY_FLASK_TENANT_OF": "attr:tenant",
}


def _instrumented(
    script: str, *args: str, env: dict[str, str], out: Path
) -> subprocess.Popen[bytes]:
    command = shutil.which("opentelemetry-instrument", path=str(BIN))
    assert command, "opentelemetry-instrument is not installed beside this Python"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.Popen(
        [command, sys.executable, str(APPS / script), *args],
        cwd=APPS,
        env={**clean, **COMMON, **env},
        stdout=out.open("wb"),  # the console exporter's spans, nothing else
        stderr=subprocess.PIPE,
    )


def _port(path: Path, process: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return int(path.read_text())
        if process.poll() is not None:
            pytest.fail(f"service exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        time.sleep(0.05)
    pytest.fail(f"no port in {path} after 20 s")


def _stop(process: subprocess.Popen[bytes], *, terminate: bool = True) -> str:
    if terminate and process.poll() is None:
        process.send_signal(signal.SIGTERM)  # the services exit cleanly: atexit flushes spans
    try:
        _, err = process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
    return err.decode(errors="replace")


@dataclass
class Run:
    reply: dict[str, object]
    spans: list[_report.Span]
    files: list[Path]
    authenticated_traces: set[str]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    tmp = tmp_path_factory.mktemp("zero_code")
    workflows = _instrumented(
        "workflows.py",
        str(tmp / "wf.port"),
        env={"OTEL_SERVICE_NAME": "workflows"},
        out=tmp / "workflows.spans",
    )
    edge = None
    try:
        target = f"127.0.0.1:{_port(tmp / 'wf.port', workflows)}"
        edge = _instrumented(
            "edge.py", target, str(tmp / "edge.port"), env=EDGE, out=tmp / "edge.spans"
        )
        port = _port(tmp / "edge.port", edge)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/report", headers={"Authorization": "Bearer ada-token"}
        )
        with urllib.request.urlopen(request, timeout=20) as response:
            reply = json.loads(response.read())
        cron = _instrumented(
            "cron.py", target, env={"OTEL_SERVICE_NAME": "cron"}, out=tmp / "cron.spans"
        )
        cron_err = _stop(cron, terminate=False)
        assert cron.returncode == 0, cron_err
    finally:
        errors = {"edge": _stop(edge) if edge else "", "workflows": _stop(workflows)}
    for service, err in errors.items():
        assert "Traceback" not in err, f"{service} failed:\n{err}"
    files = [tmp / "edge.spans", tmp / "workflows.spans", tmp / "cron.spans"]
    spans = [s for f in files for s in _report.load(f.read_text())]
    edge_traces = {s.trace_id for s in spans if s.service == "edge"}
    return Run(reply, spans, files, edge_traces)


def _server(run: Run, service: str, hop: str, *, authenticated: bool = True) -> _report.Span:
    found = [
        s
        for s in run.spans
        if s.service == service
        and s.kind == "SERVER"
        and s.hop == hop
        and (s.trace_id in run.authenticated_traces) is authenticated
    ]
    assert len(found) == 1, [(s.service, s.name, s.kind) for s in run.spans]
    return found[0]


def test_the_edge_server_span_has_the_user_its_login_yielded(run: Run) -> None:
    span = _server(run, "edge", names.HOP_HTTP_SERVER)
    assert span.attributes[names.USER_ID] == "u-1"
    assert span.attributes[names.TENANT_ID] == "acme"
    assert span.event(names.EVENT_MISSING) is None


def test_every_span_downstream_of_the_login_has_the_user(run: Run) -> None:
    downstream = [s for s in run.spans if s.trace_id in run.authenticated_traces]
    assert {s.service for s in downstream} == {"edge", "workflows"}
    # edge server, edge gRPC client, workflows gRPC server, its HTTP client, audit server
    assert len(downstream) >= 5
    for span in downstream:
        assert span.attributes.get(names.USER_ID) == "u-1", (span.service, span.name)
        assert span.attributes.get(names.TENANT_ID) == "acme", (span.service, span.name)
    # Each hop between processes was signed by the sender and verified by the receiver.
    for hop in (names.HOP_GRPC_SERVER, names.HOP_HTTP_SERVER):
        assert _server(run, "workflows", hop).attributes[names.IDENTITY_VERIFIED] is True


def test_the_resolver_ran_on_each_hop_in_that_hops_thread(run: Run) -> None:
    reply = run.reply
    workflows = reply["workflows"]
    assert isinstance(workflows, dict)
    hops = [
        *reply["branches"],  # type: ignore[misc]
        workflows["handler"],
        *workflows["branches"],
        workflows["audit"],
    ]
    for hop in hops:
        assert hop["user"] == "u-1" and hop["tenant"] == "acme", hop
        assert hop["loaded_in"] == hop["thread"], hop  # a fresh object, built right there
    threads = {hop["thread"] for hop in hops}
    assert any(t.startswith("edge-branch") for t in threads)
    assert any(t.startswith("wf-rpc") for t in threads)
    assert any(t.startswith("wf-branch") for t in threads)


@pytest.mark.parametrize("hop", [names.HOP_GRPC_SERVER, names.HOP_HTTP_SERVER])
def test_the_cron_hop_without_identity_records_identity_missing(run: Run, hop: str) -> None:
    span = _server(run, "workflows", hop, authenticated=False)
    assert names.USER_ID not in span.attributes
    missing = span.event(names.EVENT_MISSING)
    assert missing is not None and missing[names.ATTR_HOP] == hop


def _report_of(path: Path) -> str:
    command = shutil.which("otel-identity", path=str(BIN))
    assert command
    done = subprocess.run(
        [command, "report", str(path)], capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout


def _rows(text: str) -> dict[tuple[str, str], list[str]]:
    rows = {}
    for line in text.splitlines()[2:]:
        if not line.strip():
            break
        cells = line.split()
        rows[(cells[0], cells[1])] = cells[2:]
    return rows


def _documents(text: str) -> Iterator[dict[str, object]]:
    """The span documents of a console exporter's output (indented JSON, one after another)."""
    decoder, index = json.JSONDecoder(), 0
    while True:
        index = text.find("{", index)
        if index < 0:
            return
        document, index = decoder.raw_decode(text, index)
        yield document


def test_report_shows_full_coverage_on_the_authenticated_paths(run: Run, tmp_path: Path) -> None:
    everything = tmp_path / "all.spans"
    everything.write_text("".join(f.read_text() for f in run.files))
    authenticated = tmp_path / "authenticated.spans"  # the traces the logged-in request made
    with authenticated.open("w") as out:
        for document in _documents(everything.read_text()):
            context = document["context"]
            assert isinstance(context, dict)
            if _report._ident(context["trace_id"]) in run.authenticated_traces:
                out.write(json.dumps(document, indent=4) + "\n")
    rows = _rows(_report_of(authenticated))
    assert set(rows) == {
        ("edge", "http.server"),
        ("workflows", "grpc.server"),
        ("workflows", "http.server"),
    }
    assert all(cells[-1] == "100%" for cells in rows.values()), rows
    # The whole run: the cron hop is the one place identity was missing.
    text = _report_of(everything)
    assert _rows(text)[("edge", "http.server")][-1] == "100%"
    assert "identity lost on 2 hop(s)" in text  # the cron call, and the audit call it made
    assert "after cron/" in text


def test_doctor_finds_nothing_wrong_with_the_edges_environment() -> None:
    command = shutil.which("otel-identity", path=str(BIN))
    assert command
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [command, "doctor"],
        cwd=APPS,  # where the services run: the resolver module is found from here
        env={**clean, **COMMON, **EDGE},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout
    assert "ok    resolver zc_users:resolve imports" in done.stdout
    assert "info  OTEL_IDENTITY_FLASK_TENANT_OF='attr:tenant': checked at each login" in (
        done.stdout
    )
    assert "0 error(s)" in done.stdout
