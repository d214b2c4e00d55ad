"""Edge population: identity from the app's own authentication, on real loopback servers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import flask
import flask_login
import jwt
import pytest
import requests
from opentelemetry import context as otel_context
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware as OtelASGI
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware as OtelWSGI
from opentelemetry.trace import SpanKind
from otel_identity_http import (
    IdentityASGIMiddleware,
    IdentityWSGIMiddleware,
    StarletteUserIdentityMiddleware,
    jwt_identity,
)
from starlette.applications import Starlette
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    SimpleUser,
)
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import otel_identity as oi
from otel_identity import names

from .conftest import Server
from .test_otel_identity_http_server import (
    _events,
    _server_span,
    asgi_app,
    wait_for_server_spans,
    wait_for_spans,
    wsgi_app,
)

KEY = "an-hmac-key-for-tests-only-32-bytes!"
OTHER_KEY = "another-hmac-key-for-tests-32-bytes!"


def token(claims: dict[str, Any] | None = None, key: str = KEY, **header: Any) -> str:
    body = {
        "sub": "u-9",
        "tenant_id": "acme",
        "roles": ["admin", "ops"],
        "aud": "orders",
        "exp": time.time() + 60,
    }
    body.update(claims or {})
    return jwt.encode(body, key, algorithm="HS256", headers=header or None)


def jwt_source(**kwargs: Any) -> Any:
    options: dict[str, Any] = {"key": KEY, "algorithms": ["HS256"], "audience": "orders"}
    options.update(kwargs)
    return jwt_identity(**options)


def _stack(transport: str, order: str, source: Any) -> Any:
    if transport == "wsgi":
        if order == "identity_outer":
            return IdentityWSGIMiddleware(OtelWSGI(wsgi_app), auth=[source])
        return OtelWSGI(IdentityWSGIMiddleware(wsgi_app, auth=[source]))
    if order == "identity_outer":
        return IdentityASGIMiddleware(OtelASGI(asgi_app), auth=[source])
    return OtelASGI(IdentityASGIMiddleware(asgi_app, auth=[source]))


@pytest.fixture
def serve(
    wsgi_server: Callable[..., Server], asgi_server: Callable[..., Server]
) -> Callable[..., Server]:
    def start(transport: str, order: str, source: Any) -> Server:
        starter = wsgi_server if transport == "wsgi" else asgi_server
        return starter(_stack(transport, order, source))

    return start


TRANSPORTS = ["wsgi", "asgi"]
ORDERS = ["identity_outer", "identity_inner"]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("order", ORDERS)
def test_valid_jwt_sets_identity_at_a_strip_edge_and_beats_forged_baggage(
    serve: Callable[..., Server], spans: Any, transport: str, order: str
) -> None:
    oi.configure(inbound="strip")
    handle = serve(transport, order, jwt_source())
    headers = {"authorization": f"Bearer {token()}", "baggage": "user.id=forged"}
    seen = requests.get(handle.url(), headers=headers, timeout=10).json()
    assert seen["before"]["user"] == "u-9"
    assert seen["during"]["tenant"] == "acme"
    server = _server_span(spans)
    assert _events(server, names.EVENT_MISSING) == []
    assert server.attributes is not None
    assert server.attributes.get("user.id") == "u-9"
    assert server.attributes.get("identity.verified") is True


@pytest.mark.parametrize(
    ("bad_token", "reason"),
    [
        (lambda: token({"exp": time.time() - 5}), names.REASON_EXPIRED),
        (lambda: token(key=OTHER_KEY), names.REASON_BAD_SIGNATURE),
        (lambda: token({"aud": "billing"}), names.REASON_UNTRUSTED),
        (lambda: token({"exp": None}), names.REASON_MALFORMED),
        (
            lambda: jwt.encode({"sub": "u", "exp": time.time() + 60}, None, algorithm="none"),
            names.REASON_UNTRUSTED,
        ),
        (lambda: "not.a.jwt", names.REASON_MALFORMED),
        (lambda: "x" * 9000, names.REASON_OVERSIZE),
        (lambda: token({"sub": {"nested": 1}}), names.REASON_MALFORMED),
        (lambda: token({"sub": "a\nb"}), names.REASON_MALFORMED),
    ],
)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_invalid_jwt_gives_no_identity_and_a_rejected_event(
    serve: Callable[..., Server],
    spans: Any,
    transport: str,
    bad_token: Callable[[], str],
    reason: str,
) -> None:
    oi.configure(inbound="trust")
    handle = serve(transport, "identity_inner", jwt_source())
    headers = {"authorization": f"Bearer {bad_token()}", "baggage": "user.id=from-baggage"}
    response = requests.get(handle.url(), headers=headers, timeout=10)
    assert response.status_code == 200
    assert response.json()["before"]["user"] is None  # failed authentication: fail closed
    server = _server_span(spans)
    rejected = [e[names.ATTR_REJECT_REASON] for e in _events(server, names.EVENT_REJECTED)]
    assert rejected == [reason]
    assert len(_events(server, names.EVENT_MISSING)) == 1


def test_jwt_key_rotation_picks_the_key_by_kid(serve: Callable[..., Server], spans: Any) -> None:
    oi.configure(inbound="strip")
    source = jwt_source(key=None, keys={"old": OTHER_KEY, "new": KEY})
    handle = serve("asgi", "identity_outer", source)
    for kid, key, user in (("new", KEY, "u-9"), ("old", OTHER_KEY, "u-9"), ("gone", KEY, None)):
        headers = {"authorization": f"Bearer {token(key=key, kid=kid)}"}
        seen = requests.get(handle.url(), headers=headers, timeout=10).json()
        assert seen["before"]["user"] == user, kid
    finished = wait_for_spans(spans, lambda f: sum(s.kind is SpanKind.SERVER for s in f) == 3)
    server_spans = [s for s in finished if _events(s, names.EVENT_REJECTED)]
    reasons = [e[names.ATTR_REJECT_REASON] for e in _events(server_spans[0], "identity.rejected")]
    assert reasons == [names.REASON_UNKNOWN_KEY]


def test_jwt_claim_mapping_by_dotted_path_and_scope_string(
    serve: Callable[..., Server],
) -> None:
    oi.configure(inbound="strip")
    source = jwt_source(
        user_claim="preferred_username",
        tenant_claim="org.id",
        roles_claim="scope",
    )
    handle = serve("wsgi", "identity_inner", source)

    claims = {"preferred_username": "alice", "org": {"id": "t-7"}, "scope": "read write"}
    captured: dict[str, Any] = {}

    def capture(request: Any) -> Any:
        result = source(request)
        captured["identity"] = result
        return result

    capture(_View({"authorization": f"Bearer {token(claims)}"}))
    identity = captured["identity"]
    assert identity == oi.Identity("alice", "t-7", None, ("read", "write"))
    assert identity.verified is True
    assert requests.get(handle.url(), timeout=10).status_code == 200


class _View:
    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers
        self.path = "/"

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


def test_jwt_source_ignores_other_schemes_and_never_raises() -> None:
    source = jwt_source()
    assert source(_View({})) is None
    assert source(_View({"authorization": "Basic dXNlcjpwYXNz"})) is None
    assert source(_View({"authorization": "Bearer "})) is not None  # presented, invalid
    wrong_key_type = jwt_identity(key=12345, algorithms=["HS256"])
    assert wrong_key_type(_View({"authorization": f"Bearer {token()}"})) is not None


# --- Starlette request.user -----------------------------------------------------------------


class HeaderBackend(AuthenticationBackend):
    async def authenticate(self, conn: HTTPConnection) -> Any:
        user = conn.headers.get("x-user")
        if not user:
            return None
        return AuthCredentials(["orders:read"]), SimpleUser(user)


async def whoami(request: Request) -> JSONResponse:
    identity = oi.get_identity()
    return JSONResponse(
        {
            "user": identity.user_id if identity else None,
            "tenant": identity.tenant_id if identity else None,
            "roles": list(identity.roles) if identity else None,
        }
    )


def starlette_app() -> Starlette:
    return Starlette(
        routes=[Route("/whoami", whoami)],
        middleware=[
            Middleware(AuthenticationMiddleware, backend=HeaderBackend()),
            Middleware(StarletteUserIdentityMiddleware, tenant_of=lambda user: "acme"),
        ],
    )


@pytest.mark.parametrize("order", ORDERS)
def test_starlette_request_user_becomes_the_identity(
    asgi_server: Callable[..., Server], spans: Any, order: str
) -> None:
    oi.configure(inbound="strip")
    app: Any = starlette_app()
    app = (
        IdentityASGIMiddleware(OtelASGI(app))
        if order == "identity_outer"
        else OtelASGI(IdentityASGIMiddleware(app))
    )
    handle = asgi_server(app)
    seen = requests.get(
        handle.url("/whoami"), headers={"x-user": "bob", "baggage": "user.id=x"}, timeout=10
    ).json()
    assert seen == {"user": "bob", "tenant": "acme", "roles": ["orders:read"]}
    server = _server_span(spans)
    assert _events(server, names.EVENT_MISSING) == []
    # The server span started before Starlette's auth ran; it still says who asked.
    assert server.attributes is not None
    assert (server.attributes[names.USER_ID], server.attributes[names.TENANT_ID]) == (
        "bob",
        "acme",
    )
    spans.clear()
    anonymous = requests.get(handle.url("/whoami"), timeout=10).json()
    assert anonymous["user"] is None
    server = _server_span(spans)
    assert len(_events(server, names.EVENT_MISSING)) == 1
    assert server.attributes is not None and names.USER_ID not in server.attributes


def test_starlette_user_mapping_that_raises_leaves_request_unauthenticated(
    asgi_server: Callable[..., Server],
) -> None:
    def broken(user: Any) -> str:
        raise RuntimeError("tenant lookup down")

    app = Starlette(
        routes=[Route("/whoami", whoami)],
        middleware=[
            Middleware(AuthenticationMiddleware, backend=HeaderBackend()),
            Middleware(StarletteUserIdentityMiddleware, tenant_of=broken),
        ],
    )
    handle = asgi_server(IdentityASGIMiddleware(app))
    response = requests.get(handle.url("/whoami"), headers={"x-user": "bob"}, timeout=10)
    assert response.status_code == 200
    assert response.json()["user"] is None


# --- Flask-Login ----------------------------------------------------------------------------


class User(flask_login.UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id


def flask_app() -> flask.Flask:
    """A Flask-Login app whose identity comes from ``login_user`` and the session cookie.

    The before/teardown pair stands for ``otel_identity_flask`` (which bridges Flask-Login):
    the point here is that the HTTP hop composes with identity set inside the app.
    """
    app = flask.Flask("login-app")
    app.secret_key = "test-only"
    manager = flask_login.LoginManager(app)

    @manager.user_loader
    def load(user_id: str) -> User:
        return User(user_id)

    @app.before_request
    def bridge() -> None:
        if flask_login.current_user.is_authenticated:
            ctx = oi.set_identity(user_id=flask_login.current_user.id, tenant_id="acme")
            flask.g.identity_token = otel_context.attach(ctx)

    @app.teardown_request
    def unbridge(_exc: BaseException | None) -> None:
        token = flask.g.pop("identity_token", None)
        if token is not None:
            otel_context.detach(token)

    @app.post("/login")
    def login() -> str:
        flask_login.login_user(User(flask.request.form["user"]))
        return "ok"

    @app.get("/whoami")
    def whoami_view() -> dict[str, Any]:
        identity = oi.get_identity()
        return {"user": identity.user_id if identity else None}

    return app


@pytest.mark.parametrize("order", ORDERS)
def test_flask_login_identity_composes_with_the_http_hop(
    wsgi_server: Callable[..., Server], spans: Any, order: str
) -> None:
    oi.configure(inbound="strip")
    app = flask_app()
    if order == "identity_outer":
        app.wsgi_app = IdentityWSGIMiddleware(OtelWSGI(app.wsgi_app))  # type: ignore[method-assign]
    else:
        app.wsgi_app = OtelWSGI(IdentityWSGIMiddleware(app.wsgi_app))  # type: ignore[method-assign]
    handle = wsgi_server(app)
    session = requests.Session()
    assert session.get(handle.url("/whoami"), timeout=10).json() == {"user": None}
    assert len(_events(_server_span(spans), names.EVENT_MISSING)) == 1
    assert session.post(handle.url("/login"), data={"user": "u-5"}, timeout=10).ok
    wait_for_server_spans(spans, 2)  # the login's span ends after its response
    spans.clear()
    assert session.get(handle.url("/whoami"), timeout=10).json() == {"user": "u-5"}
    server = _server_span(spans)
    assert _events(server, names.EVENT_MISSING) == []
    assert server.attributes is not None and server.attributes[names.USER_ID] == "u-5"


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("order", ORDERS)
def test_hops_authenticated_by_the_app_count_as_present_and_the_rest_as_missing(
    serve: Callable[..., Server], transport: str, order: str
) -> None:
    from otel_identity import _telemetry

    oi.configure(inbound="strip")
    handle = serve(transport, order, jwt_source())
    before = _telemetry.hop_counts()
    good = {"authorization": f"Bearer {token()}", "baggage": "user.id=forged"}
    requests.get(handle.url(), headers=good, timeout=10).raise_for_status()
    requests.get(handle.url(), timeout=10).raise_for_status()
    after = _telemetry.hop_counts()

    def delta(outcome: str) -> int:
        key = ("http.server", outcome)
        return after.get(key, 0) - before.get(key, 0)

    assert (delta("present"), delta("missing"), delta("rejected")) == (1, 1, 0)
