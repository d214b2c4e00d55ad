"""A bad ``OTEL_IDENTITY_*`` value in a running app: one clear log line, nothing raised into
a request, and the identity path closed both ways (nothing sent, nothing accepted).

Through a real hop: an instrumented ``requests`` client calling a WSGI service behind the
identity middleware, on loopback.
"""

from __future__ import annotations

import http.client
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from otel_identity_http import HttpClientIdentityInstrumentor, IdentityWSGIMiddleware

import otel_identity as oi
from otel_identity import _config

from .conftest import Server


def _service(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    identity = oi.get_identity()
    seen = {
        "baggage": environ.get("HTTP_BAGGAGE"),
        "identity": identity.user_id if identity else None,
        "user": repr(oi.current_user._get_current_object()),  # type: ignore[attr-defined]
    }
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(seen).encode()]


@pytest.fixture
def client_instrumented() -> Iterator[None]:
    instrumentor = HttpClientIdentityInstrumentor()
    instrumentor.instrument()
    yield
    instrumentor.uninstrument()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_IDENTITY_EGRESS_STRIP_ALL_BAGGAGE", "maybe"),
        ("OTEL_IDENTITY_TOKEN_TTL", "soon"),
        ("OTEL_IDENTITY_EGRESS_ALLOW", "https://billing.example.com"),
    ],
)
def test_a_bad_setting_closes_the_identity_path_with_one_log_line(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    wsgi_server: Callable[..., Server],
    client_instrumented: None,
    variable: str,
    value: str,
) -> None:
    monkeypatch.setenv(variable, value)
    _config.reset_settings()
    oi.set_user_resolver(lambda identity: f"user {identity.user_id}")
    caplog.set_level(logging.WARNING, logger="otel_identity")
    handle = wsgi_server(IdentityWSGIMiddleware(_service))

    # Nothing sent: identity set in this process does not leave it.
    with oi.use_identity(user_id="u-1", tenant_id="acme"):
        assert oi.get_identity() == oi.Identity(user_id="u-1", tenant_id="acme")
        sent = requests.get(handle.url("/orders"), timeout=10)
    assert sent.status_code == 200
    assert "user.id" not in (sent.json()["baggage"] or "")
    assert sent.json()["identity"] is None

    # Nothing accepted: identity that arrives in baggage is not believed.
    connection = http.client.HTTPConnection(handle.host, handle.port, timeout=10)
    connection.request("GET", "/orders", headers={"baggage": "user.id=u-9,tenant.id=acme"})
    arrived = json.loads(connection.getresponse().read())
    connection.close()
    assert (arrived["identity"], arrived["user"]) == (None, "None")

    lines = [r for r in caplog.records if r.name == "otel_identity"]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].levelno == logging.ERROR
    assert variable in lines[0].getMessage()
    assert "nothing is sent, nothing is accepted" in lines[0].getMessage()
    assert lines[0].exc_info is None  # one line, no traceback


def test_fixing_the_setting_opens_the_path_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_IDENTITY_EGRESS_STRIP_ALL_BAGGAGE", "maybe")
    _config.reset_settings()
    carrier: dict[str, str] = {}
    oi.inject(carrier, context=oi.set_identity(user_id="u-1"))
    assert "user.id" not in carrier.get("baggage", "")
    monkeypatch.setenv("OTEL_IDENTITY_EGRESS_STRIP_ALL_BAGGAGE", "false")
    _config.reset_settings()
    oi.inject(carrier, context=oi.set_identity(user_id="u-1"))
    assert carrier["baggage"] == "user.id=u-1"
