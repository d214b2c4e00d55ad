"""Real servers on loopback for integration tests.

``need_service("redis", 6379)`` skips the test with a clear reason when the server does not
answer on a developer's machine, and fails it under ``CI=true``: a skipped broker test in CI
would be a green run that proved nothing. ``.ci/run`` starts the servers before the tests.
"""

from __future__ import annotations

import os
import socket

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def answering(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def need_service(name: str, port: int, host: str = "127.0.0.1") -> None:
    if answering(port, host):
        return
    message = f"{name} is not answering on {host}:{port}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: .ci/run should have started it)")
    pytest.skip(f"{message}; start it to run this test")


def need_tool(name: str, package: str) -> str:
    """The path of the program ``name``; skipped off CI when absent, a failure under CI."""
    import shutil

    path = shutil.which(name)
    if path is not None:
        return path
    message = f"{name} is not installed (Debian package {package})"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: .ci/run should have installed it)")
    pytest.skip(f"{message}; install it to run this test")
