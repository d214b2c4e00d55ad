"""The example, end to end: a real HTTP server on loopback, a cookie login, 8 branches."""

from __future__ import annotations

import importlib.util
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests
from otel_identity_flask import FlaskIdentityInstrumentor
from otel_identity_threading import ThreadingIdentityInstrumentor
from werkzeug.serving import make_server

import otel_identity as oi


def _load_example() -> ModuleType:
    name = "flask_parallel_branches_app"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


example = _load_example()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    started: list[tuple[Any, Any, threading.Thread]] = []

    def start(identity: bool) -> str:
        app = example.create_app(identity=identity, database=str(tmp_path / "app.db"))
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        started.append((app, server, thread))
        return f"http://127.0.0.1:{server.server_port}"

    try:
        yield start
    finally:
        for app, server, thread in started:
            server.shutdown()
            thread.join(timeout=5)
            app.extensions["branches"]["pool"].shutdown()
            FlaskIdentityInstrumentor.uninstrument_app(app)
        ThreadingIdentityInstrumentor().uninstrument()
        oi.set_user_resolver(None)


def _fan_out(base: str, name: str) -> requests.Response:
    with requests.Session() as client:
        login = client.post(f"{base}/login", data={"name": name}, timeout=10)
        assert login.status_code == 200
        assert client.cookies  # the Flask session cookie: the login is real
        return client.get(f"{base}/branches", timeout=10)


def test_without_otel_identity_every_branch_sees_current_user_none(serve: Any) -> None:
    ThreadingIdentityInstrumentor().uninstrument()
    response = _fan_out(serve(identity=False), "alice")
    assert response.status_code == 500
    branches = response.json()["branches"]
    assert len(branches) == example.BRANCHES
    for result in branches:
        assert result["error"] == (
            "AttributeError: 'NoneType' object has no attribute 'current_tenant'"
        )


def test_with_otel_identity_every_branch_reads_its_tenant_through_its_own_session(
    serve: Any,
) -> None:
    base = serve(identity=True)
    for name, tenant, documents in (("alice", "acme", 3), ("bob", "globex", 5)):
        response = _fan_out(base, name)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["user"] == name
        assert [r["branch"] for r in body["branches"]] == list(range(example.BRANCHES))
        for result in body["branches"]:
            assert result["tenant"] == tenant
            assert result["documents"] == documents
            assert result["own_session"] is True
