"""``otel-identity demo`` as a newcomer meets it: every figure said in words, and what stops it
from running said in one line, exit status 2, within seconds."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_IDENTITY_")}
    return subprocess.run(
        [str(BIN / "otel-identity"), "demo", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**clean, **(env or {})},
    )


def test_every_figure_of_the_summary_is_said_in_words() -> None:
    result = _demo()
    assert result.returncode == 0, result.stderr
    summary = result.stdout.split("\nSummary\n", 1)[1]
    # No bare "kind/outcome=n" codes, such as the thread/missing=12 that puzzled a newcomer.
    assert not re.search(r"\w/\w+=\d", summary), summary
    assert "users loaded from SQLite: 7 (once on each hop that read current_user" in summary
    assert "spans with identity.missing: 1 (expected: 1" in summary
    hops = " ".join(summary.split("by kind:\n", 1)[1].split())  # the wrapping undone
    assert re.search(
        r"thread \d+ with identity, \d+ without: threads and pool tasks the servers and "
        r"libraries start outside any request, for their own plumbing; threads are not a "
        r"required hop, so this is expected",
        hops,
    ), hops
    assert "queue.consume 3 with identity, 1 without: the legacy-cron job" in hops
    assert "demo: OK (every hop behaved as designed)" in result.stdout


def _one_clear_line(result: subprocess.CompletedProcess[str], says: str) -> None:
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("otel-identity demo: ") and says in lines[0], lines[0]


def test_an_export_path_that_cannot_be_written_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = _demo("--export", str(tmp_path / "no" / "such" / "dir" / "spans.json"))
    _one_clear_line(result, "cannot write --export")


def test_a_bad_setting_is_one_line_and_exit_2() -> None:
    result = _demo(env={"OTEL_IDENTITY_EGRESS_STRIP_ALL_BAGGAGE": "maybe"})
    _one_clear_line(result, "configuration error: OTEL_IDENTITY_EGRESS_STRIP_ALL_BAGGAGE")


def test_export_writes_what_report_reads(tmp_path: Path) -> None:
    path = tmp_path / "spans.json"
    result = _demo("--export", str(path))
    assert result.returncode == 0, result.stderr
    assert f"otel-identity report {path}" in result.stdout
    report = subprocess.run(
        [str(BIN / "otel-identity"), "report", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "identity lost on 1 hop(s)" in report.stdout


@pytest.fixture
def silent_broker() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung broker)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    for connection in accepted:
        connection.close()
    server.close()


def _closed_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port: int = probe.getsockname()[1]
    probe.close()
    return port


@pytest.mark.parametrize("broker", ["closed", "silent", "unknown-scheme"])
def test_an_unreachable_broker_fails_within_10_seconds_in_one_line(
    broker: str, request: pytest.FixtureRequest
) -> None:
    if broker == "closed":
        url = f"redis://127.0.0.1:{_closed_port()}/0"
    elif broker == "silent":
        url = f"redis://127.0.0.1:{request.getfixturevalue('silent_broker')}/0"
    else:
        url = "nosuchtransport://127.0.0.1/"
    started = time.monotonic()
    result = _demo("--broker", url)
    took = time.monotonic() - started
    _one_clear_line(result, f"cannot reach the broker {url}")
    assert took < 10, f"took {took:.1f} s"  # the bound, process start included


def test_the_summary_counts_this_runs_hops_only(capsys: pytest.CaptureFixture[str]) -> None:
    """Run twice in one process: the second summary is not the sum of both runs."""
    from otel_identity._cli import main

    summaries = []
    for _ in range(2):
        assert main(["demo"]) == 0
        summaries.append(" ".join(capsys.readouterr().out.split("by kind:", 1)[1].split()))
    for summary in summaries:
        assert "queue.consume 3 with identity, 1 without" in summary, summary
        assert "http.server 1 with identity" in summary, summary
