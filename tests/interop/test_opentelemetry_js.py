"""OpenTelemetry JS reads our baggage exactly, and forwards a signed identity that still verifies.

A small Node service (``js/server.js``) extracts the ``baggage`` header with OpenTelemetry JS's
own ``W3CBaggagePropagator`` (npm ``@opentelemetry/core``), answers with the values it read,
and on ``/forward`` re-injects the baggage on a request to a Python server. Its packages are
installed with ``npm ci`` from the committed lock file into a cache directory
(``OTEL_IDENTITY_JS_CACHE``, default ``~/.cache/otel-identity/interop-js``), once per lock file.
Skipped when ``node``/``npm`` are missing, failed under ``CI=true``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from opentelemetry import baggage
from opentelemetry.context import Context
from otel_identity_http import IdentityWSGIMiddleware

import otel_identity as oi
from otel_identity import _baggage_propagator
from tests.otel_identity_http.conftest import Server
from tests.services import IN_CI

JS = Path(__file__).parent / "js"
FILES = ("package.json", "package-lock.json", "server.js")

# Values on which decoders disagree (space, '+', '%'), list and property separators, non-ASCII.
TRICKY = {
    "user.id": "ada lovelace+%20;x,y é😀",
    "tenant.id": "acme, inc.; 100% = ok",
    "session.id": "s+1 %2B",
    "note": "50% off; a+b, é",
    "emoji": "😀 ☃",
}


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the OpenTelemetry JS interop test must run)")
    pytest.skip(reason)


def _installed_dir() -> Path:
    """The cache directory with the Node service and its packages (npm ci once per lock)."""
    if not shutil.which("node") or not shutil.which("npm"):
        _unavailable("node and npm are needed for the OpenTelemetry JS interop test")
    digest = hashlib.sha256(b"".join((JS / name).read_bytes() for name in FILES)).hexdigest()
    default = Path.home() / ".cache" / "otel-identity" / "interop-js"
    target = Path(os.environ.get("OTEL_IDENTITY_JS_CACHE", default)) / digest[:16]
    if not (target / "node_modules" / "@opentelemetry" / "core").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            shutil.copy(JS / name, target / name)
        result = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=target,
            check=False,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            shutil.rmtree(target / "node_modules", ignore_errors=True)
            _unavailable(f"npm ci failed: {result.stderr.strip()[-500:]}")
    return target


@pytest.fixture(scope="module")
def node_service() -> Iterator[str]:
    """The base URL of the Node service on loopback."""
    target = _installed_dir()
    process = subprocess.Popen(
        ["node", "server.js", "0"],
        cwd=target,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline() if process.stdout else ""
        if not line:
            stderr = process.stderr.read() if process.stderr else ""
            pytest.fail(f"the Node service did not start: {stderr[-500:]}")
        yield f"http://127.0.0.1:{json.loads(line)['port']}"
    finally:
        process.terminate()
        process.wait(10)


def python_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    identity = oi.get_identity()
    body = {
        "identity": None
        if identity is None
        else {
            "user_id": identity.user_id,
            "tenant_id": identity.tenant_id,
            "session_id": identity.session_id,
            "roles": list(identity.roles),
            "verified": identity.verified,
        },
        "baggage": dict(baggage.get_all()),
    }
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]


@pytest.fixture(params=["opentelemetry", "ours"])
def textmap(request: pytest.FixtureRequest) -> Iterator[str]:
    """With OpenTelemetry's baggage step in the global textmap, and with ours in its place."""
    if request.param == "ours":
        assert _baggage_propagator.install()
    try:
        yield request.param
    finally:
        _baggage_propagator.uninstall()


def _context_with(members: dict[str, str], roles: tuple[str, ...] = ()) -> Context:
    ctx = Context()
    for key in ("note", "emoji"):
        ctx = baggage.set_baggage(key, members[key], ctx)
    return oi.set_identity(
        user_id=members["user.id"],
        tenant_id=members["tenant.id"],
        session_id=members["session.id"],
        roles=roles,
        context=ctx,
    )


def test_opentelemetry_js_reads_every_value_exactly(node_service: str, textmap: str) -> None:
    headers: dict[str, str] = {}
    oi.inject(headers, context=_context_with(TRICKY, roles=("admin", "read only")))
    read = requests.get(f"{node_service}/read", headers=headers, timeout=10).json()["read"]
    assert read == {**TRICKY, "user.roles": "admin,read only"}


def test_our_propagator_alone_is_read_exactly_by_opentelemetry_js(node_service: str) -> None:
    headers: dict[str, str] = {}
    oi.IdentityBaggagePropagator().inject(headers, context=_context_with(TRICKY))
    read = requests.get(f"{node_service}/read", headers=headers, timeout=10).json()["read"]
    assert read == TRICKY


def test_a_signed_identity_forwarded_by_opentelemetry_js_still_verifies(
    node_service: str,
    wsgi_server: Callable[..., Server],
    textmap: str,
) -> None:
    key = base64.b64encode(b"interop-key-0123456789abcdef0123").decode()
    oi.configure(signing_keys=f"k1:{key}", inbound="verify")
    python = wsgi_server(IdentityWSGIMiddleware(python_app))
    headers: dict[str, str] = {}
    oi.inject(headers, context=_context_with(TRICKY, roles=("admin", "read only")))
    assert "identity.sig=" in headers["baggage"]
    answer = requests.get(
        f"{node_service}/forward", params={"to": python.url("/")}, headers=headers, timeout=10
    ).json()
    assert answer["read"]["user.id"] == TRICKY["user.id"]
    forwarded = answer["forwarded"]
    assert forwarded["identity"] == {
        "user_id": TRICKY["user.id"],
        "tenant_id": TRICKY["tenant.id"],
        "session_id": TRICKY["session.id"],
        "roles": ["admin", "read only"],
        "verified": True,
    }
    assert forwarded["baggage"]["note"] == TRICKY["note"]


def test_a_token_altered_on_the_way_is_rejected(
    node_service: str,
    wsgi_server: Callable[..., Server],
) -> None:
    """The control for the test above: the same path with a changed claim does not verify."""
    key = base64.b64encode(b"interop-key-0123456789abcdef0123").decode()
    oi.configure(signing_keys=f"k1:{key}", inbound="verify")
    python = wsgi_server(IdentityWSGIMiddleware(python_app))
    headers: dict[str, str] = {}
    oi.inject(headers, context=_context_with(TRICKY))
    headers["baggage"] = headers["baggage"].replace("user.id=ada", "user.id=eve")
    answer = requests.get(
        f"{node_service}/forward", params={"to": python.url("/")}, headers=headers, timeout=10
    ).json()
    assert answer["forwarded"]["identity"] is None
