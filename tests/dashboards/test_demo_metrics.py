"""``otel-identity demo --prometheus HOST:PORT --linger SECONDS``: mistakes are one clear line
and exit status 2 (the metrics themselves are checked by test_prometheus.py)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from otel_identity._cli import main
from otel_identity_demo import _metrics


@pytest.mark.parametrize("address", ["nonsense", "127.0.0.1:", ":9464", "127.0.0.1:70000"])
def test_a_bad_address_is_refused(address: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        _metrics.parse_address(address)


def test_addresses_parse_with_ipv6_brackets() -> None:
    assert _metrics.parse_address("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert _metrics.parse_address("[::1]:9464") == ("::1", 9464)


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otel_identity._cli", "demo", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_a_port_in_use_is_one_line_and_status_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = run_demo("--prometheus", f"127.0.0.1:{taken.getsockname()[1]}")
    assert done.returncode == 2
    assert done.stdout.count("\n") == 1 and "cannot serve metrics" in done.stdout
    assert "Traceback" not in done.stderr


def test_a_process_with_its_own_meter_provider_is_told_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # the test process has one (tests/conftest.py): the demo must not replace it
    assert main(["demo", "--prometheus", "127.0.0.1:1"]) == 2
    assert "needs a process without a meter provider" in capsys.readouterr().out


def test_linger_out_of_range_prints_the_demos_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--linger", "-1"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith("usage: otel-identity demo")
