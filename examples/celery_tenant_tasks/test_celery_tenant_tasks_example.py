"""The example, end to end: Flask enqueues, a real Celery worker process (Redis) runs it."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import otel_identity as oi

HERE = Path(__file__).resolve().parent
NAME = "celery_tenant_tasks_app"


def _redis_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ModuleType, Any]]:
    if not _redis_answers():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("redis is not answering on 127.0.0.1:6379 (CI=true)")
        pytest.skip("redis is not answering on 127.0.0.1:6379")
    env = {
        "EXAMPLE_DB": str(tmp_path_factory.mktemp("db") / "tenants.sqlite"),
        "EXAMPLE_QUEUE": f"tenant-tasks-{uuid.uuid4().hex[:8]}",
        "EXAMPLE_BROKER": "redis://127.0.0.1:6379/13",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        spec = importlib.util.spec_from_file_location(NAME, HERE / f"{NAME}.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[NAME] = module
        spec.loader.exec_module(module)
        module.create_schema()
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                f"{NAME}:celery",
                "worker",
                "-P",
                "threads",
                "-c",
                "4",
                "-l",
                "WARNING",
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
            ],
            cwd=HERE,
            env={**os.environ, "PYTHONPATH": str(HERE)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            yield module, module.app.test_client()
        finally:
            worker.terminate()
            try:
                _, err = worker.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()
                _, err = worker.communicate()
            assert b"Traceback" not in err, err.decode(errors="replace")[-2000:]
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        sys.modules.pop(NAME, None)
        from otel_identity_celery import CeleryIdentityInstrumentor

        from otel_identity import _resolver

        CeleryIdentityInstrumentor().uninstrument()
        _resolver.reset_resolver()  # the example registered its resolver process-wide


def wait_report(client: Any, task_id: str) -> Any:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        response = client.get(f"/reports/{task_id}")
        if response.status_code == 200:
            return response.get_json()
        time.sleep(0.05)
    raise AssertionError(f"report {task_id} not ready")


def test_each_request_gets_its_own_tenants_rows_from_the_worker(
    example: tuple[ModuleType, Any],
) -> None:
    _, client = example
    task_ids = []
    for i in range(20):
        user = ("alice", "bob")[i % 2]
        response = client.post("/reports", headers={"X-User": user})
        assert response.status_code == 202
        task_ids.append((user, response.get_json()["task_id"]))
    expected = {
        "alice": {"tenant": "acme", "requested_by": "Alice", "invoices": 3, "total": 400},
        "bob": {"tenant": "globex", "requested_by": "Bob", "invoices": 2, "total": 1000},
    }
    for user, task_id in task_ids:
        assert wait_report(client, task_id) == expected[user]


def test_anonymous_requests_are_refused_and_tasks_without_identity_do_not_guess(
    example: tuple[ModuleType, Any],
) -> None:
    module, client = example
    assert client.post("/reports").status_code == 401
    with oi.use_identity(user_id="alice", tenant_id="acme"):
        module.tenant_summary.delay().get(timeout=20)  # the worker saw acme just before
    result = module.tenant_summary.delay()  # e.g. a cron job that forgot the identity
    assert result.get(timeout=20) == {"error": "no tenant in identity; refusing to run"}
