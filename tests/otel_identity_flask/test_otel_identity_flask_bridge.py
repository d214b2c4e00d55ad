"""The Flask-Login bridge: identity from the logged-in user at the edge, ``current_user``
rebuilt on every hop without a request context, Flask-Login untouched inside requests."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import flask_login
import flask_login.login_manager
import flask_login.utils
import pytest
from flask import Flask, jsonify
from flask.ctx import RequestContext
from flask_login import AnonymousUserMixin, LoginManager, UserMixin, login_user, logout_user
from otel_identity_flask import FlaskIdentityInstrumentor
from otel_identity_threading import ThreadingIdentityInstrumentor

import otel_identity as oi
from otel_identity import _telemetry

ORIGINALS = {
    "push": RequestContext.__dict__["push"],
    "pop": RequestContext.__dict__["pop"],
    "update": flask_login.login_manager.LoginManager.__dict__["_update_request_context_with_user"],
    "get_user": flask_login.utils._get_user,
}
TENANTS = {"1": "acme", "2": "globex"}


class User(UserMixin):  # type: ignore[misc]  # flask_login ships no types
    def __init__(self, user_id: str) -> None:
        self.id = user_id
        self.current_tenant = TENANTS[user_id]
        self.built_in = threading.get_ident()


def resolve(identity: oi.Identity) -> User | None:
    return User(identity.user_id) if identity.user_id in TENANTS else None


def _originals_back() -> bool:
    return (
        RequestContext.__dict__["push"] is ORIGINALS["push"]
        and RequestContext.__dict__["pop"] is ORIGINALS["pop"]
        and flask_login.login_manager.LoginManager.__dict__["_update_request_context_with_user"]
        is ORIGINALS["update"]
        and flask_login.utils._get_user is ORIGINALS["get_user"]
    )


def _branch_view() -> dict[str, Any]:
    user = flask_login.current_user._get_current_object()
    identity = oi.get_identity()
    return {
        "user": None if user is None else type(user).__name__,
        "tenant": getattr(user, "current_tenant", None),
        "identity": None if identity is None else (identity.user_id, identity.tenant_id),
        "built_here": getattr(user, "built_in", None) == threading.get_ident(),
    }


def make_app() -> Flask:
    app = Flask(__name__)
    app.secret_key = "test"
    app.config["TESTING"] = True
    manager = LoginManager(app)
    pool = ThreadPoolExecutor(2)
    app.extensions["pool"] = pool
    loaded: list[Any] = []
    app.extensions["loaded"] = loaded

    @manager.user_loader  # type: ignore[untyped-decorator]
    def load(user_id: str) -> User | None:
        user = User(user_id) if user_id in TENANTS else None
        loaded.append(user)
        return user

    @app.post("/login/<user_id>")
    def login(user_id: str) -> Any:
        login_user(User(user_id))
        identity = oi.get_identity()
        return jsonify(identity=None if identity is None else identity.user_id)

    @app.get("/whoami")
    def whoami() -> Any:
        user = flask_login.current_user._get_current_object()
        identity = oi.get_identity()
        return jsonify(
            kind=type(user).__name__,
            same_as_loaded=bool(loaded) and user is loaded[-1],
            identity=None if identity is None else [identity.user_id, identity.tenant_id],
            branch=pool.submit(_branch_view).result(),
        )

    @app.get("/ping")
    def ping() -> str:  # never reads current_user
        return "pong"

    @app.post("/logout")
    def logout() -> Any:
        flask_login.current_user.id  # noqa: B018 - load the user first, as a view would
        logout_user()
        return jsonify(identity=oi.get_identity(), branch=pool.submit(_branch_view).result())

    return app


@pytest.fixture
def threads() -> Iterator[None]:
    ThreadingIdentityInstrumentor().instrument()
    yield
    ThreadingIdentityInstrumentor().uninstrument()


@pytest.fixture
def app(threads: None) -> Iterator[Flask]:
    oi.set_user_resolver(resolve)
    application = make_app()
    yield application
    application.extensions["pool"].shutdown()
    FlaskIdentityInstrumentor().uninstrument()
    FlaskIdentityInstrumentor.uninstrument_app(application)
    assert _originals_back()


def _tenant_of(user: User) -> str:
    return user.current_tenant


def test_logged_in_request_sets_identity_and_branches_get_the_resolved_user(app: Flask) -> None:
    FlaskIdentityInstrumentor().instrument(tenant_of=_tenant_of)
    client = app.test_client()
    client.post("/login/2")
    body = client.get("/whoami").get_json()
    assert body["kind"] == "User"
    assert body["same_as_loaded"] is True  # inside the request: Flask-Login's own object
    assert body["identity"] == ["2", "globex"]
    assert body["branch"] == {
        "user": "User",
        "tenant": "globex",
        "identity": ["2", "globex"],
        "built_here": True,  # rebuilt by the resolver in the branch's thread
    }


def test_without_the_bridge_the_branch_sees_none(threads: None) -> None:
    oi.set_user_resolver(resolve)
    application = make_app()
    client = application.test_client()
    client.post("/login/1")
    body = client.get("/whoami").get_json()
    application.extensions["pool"].shutdown()
    assert body["identity"] is None
    assert body["branch"]["user"] is None  # the incident


def test_anonymous_request_is_anonymous_inside_and_sets_no_identity(app: Flask) -> None:
    FlaskIdentityInstrumentor().instrument(tenant_of=_tenant_of)
    body = app.test_client().get("/whoami").get_json()
    assert body["kind"] == "AnonymousUserMixin"
    assert body["identity"] is None
    assert body["branch"]["user"] is None  # Flask-Login's own answer off-request


def test_login_user_sets_identity_for_the_rest_of_the_request(app: Flask) -> None:
    FlaskIdentityInstrumentor().instrument()
    assert app.test_client().post("/login/1").get_json() == {"identity": "1"}


def test_logout_clears_identity_for_the_rest_of_the_request(app: Flask) -> None:
    FlaskIdentityInstrumentor().instrument(tenant_of=_tenant_of)
    client = app.test_client()
    client.post("/login/1")
    body = client.post("/logout").get_json()
    assert body["identity"] is None
    assert body["branch"]["user"] is None


def test_request_thread_is_back_to_its_context_after_each_request(app: Flask) -> None:
    FlaskIdentityInstrumentor().instrument(tenant_of=_tenant_of)
    client = app.test_client()  # serves in this very thread, like a reused server thread
    client.post("/login/1")
    assert client.get("/whoami").get_json()["identity"] == ["1", "acme"]
    assert oi.get_identity() is None
    anonymous = app.test_client().get("/whoami").get_json()
    assert anonymous["identity"] is None  # nothing stale from the previous request


def test_login_in_a_pushed_request_context_is_undone_when_it_is_popped(app: Flask) -> None:
    FlaskIdentityInstrumentor().instrument(tenant_of=_tenant_of)
    with app.test_request_context("/"):
        login_user(User("2"))
        identity = oi.get_identity()
        assert identity is not None
        assert (identity.user_id, identity.tenant_id) == ("2", "globex")
    assert oi.get_identity() is None


def test_instrument_app_bridges_that_app_only(threads: None) -> None:
    oi.set_user_resolver(resolve)
    bridged, plain = make_app(), make_app()
    FlaskIdentityInstrumentor.instrument_app(bridged, tenant_of=_tenant_of)
    try:
        for application, expected in ((bridged, ["1", "acme"]), (plain, None)):
            client = application.test_client()
            client.post("/login/1")
            assert client.get("/whoami").get_json()["identity"] == expected
    finally:
        FlaskIdentityInstrumentor.uninstrument_app(bridged)
        for application in (bridged, plain):
            application.extensions["pool"].shutdown()
    assert _originals_back()


def test_current_user_off_request_is_the_resolved_user_never_none_or_anonymous(
    app: Flask,
) -> None:
    FlaskIdentityInstrumentor().instrument()
    out: list[Any] = []
    with oi.use_identity(user_id="1", tenant_id="acme"):
        thread = threading.Thread(target=lambda: out.append(_branch_view()))
        thread.start()
        thread.join()
        with app.app_context():  # an app context, still no request of its own
            assert flask_login.current_user.current_tenant == "acme"
    assert out[0]["user"] == "User"
    assert out[0]["built_here"] is True
    assert flask_login.current_user._get_current_object() is None  # no identity: as before


def test_inside_a_request_flask_login_is_untouched_even_with_an_identity(app: Flask) -> None:
    FlaskIdentityInstrumentor().instrument()
    with oi.use_identity(user_id="1"), app.test_request_context("/"):
        assert isinstance(flask_login.current_user._get_current_object(), AnonymousUserMixin)


def test_tenant_of_that_raises_leaves_the_request_without_identity(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(user: User) -> str:
        raise KeyError("tenant")

    FlaskIdentityInstrumentor().instrument(tenant_of=broken)
    client = app.test_client()
    client.post("/login/1")
    _telemetry._logged_once.discard(("flask.claims", "KeyError"))  # logged once per process
    logger = logging.getLogger("otel_identity")
    logger.addHandler(caplog.handler)  # whatever other tests did to propagation
    try:
        with caplog.at_level("WARNING", logger="otel_identity"):
            response = client.get("/whoami")
    finally:
        logger.removeHandler(caplog.handler)
    assert response.status_code == 200
    assert response.get_json()["identity"] is None
    assert "could not take identity from the Flask-Login user (KeyError)" in caplog.text


def test_double_instrument_wraps_once_and_names_are_kept(app: Flask) -> None:
    FlaskIdentityInstrumentor().instrument()
    FlaskIdentityInstrumentor().instrument()
    FlaskIdentityInstrumentor.instrument_app(app)
    FlaskIdentityInstrumentor.instrument_app(app)
    assert RequestContext.__dict__["push"].__wrapped__ is ORIGINALS["push"]  # one layer
    assert RequestContext.__dict__["pop"].__wrapped__ is ORIGINALS["pop"]
    assert RequestContext.push.__qualname__ == "RequestContext.push"
    assert flask_login.utils._get_user.__wrapped__ is ORIGINALS["get_user"]
    FlaskIdentityInstrumentor().uninstrument()
    assert not _originals_back()  # the app still uses the hooks
    FlaskIdentityInstrumentor.uninstrument_app(app)
    assert _originals_back()


def test_works_under_opentelemetry_flask_instrumentation(app: Flask) -> None:
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    FlaskInstrumentor().instrument_app(app)  # type: ignore[no-untyped-call]
    try:
        FlaskIdentityInstrumentor().instrument(tenant_of=_tenant_of)
        client = app.test_client()
        client.post("/login/1")
        assert client.get("/whoami").get_json()["branch"]["tenant"] == "acme"
        assert oi.get_identity() is None
    finally:
        FlaskInstrumentor().uninstrument_app(app)  # type: ignore[no-untyped-call]


def test_request_context_copied_into_a_thread_restores_each_thread_on_its_own(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    from flask import copy_current_request_context

    FlaskIdentityInstrumentor().instrument(tenant_of=_tenant_of)
    seen: list[Any] = []
    release = threading.Event()
    started = threading.Event()

    with app.test_request_context("/"):
        login_user(User("1"))

        @copy_current_request_context
        def branch() -> None:
            started.set()
            release.wait(5)
            seen.append(flask_login.current_user.id)

        thread = threading.Thread(target=branch)
        thread.start()
        started.wait(5)
    release.set()  # the request was popped here first, then the branch's copy
    thread.join()
    assert seen == ["1"]
    assert oi.get_identity() is None
    assert "Failed to detach context" not in caplog.text


class _Member:
    current_tenant = "acme"


def tenant_by_function(user: object) -> str:
    return "from-function"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("attr:current_tenant", "acme"),
        (f"{__name__}:tenant_by_function", "from-function"),
    ],
)
def test_tenant_of_comes_from_the_environment_under_auto_instrumentation(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: str
) -> None:
    from otel_identity_flask._instrumentor import tenant_of_from_environment

    monkeypatch.setenv("OTEL_IDENTITY_FLASK_TENANT_OF", value)
    tenant_of = tenant_of_from_environment()
    assert tenant_of is not None
    assert tenant_of(_Member()) == expected


@pytest.mark.parametrize(
    "value",
    ["no.such.module:fn", "attr:not an identifier", "garbage", "attr:nope", "logging:DEBUG"],
)
def test_an_unusable_tenant_of_setting_fails_closed_with_one_log_line(
    app: Flask, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, value: str
) -> None:
    """A logged-in request carries no identity rather than one without its tenant (the
    cross-tenant incident this library exists for), the request itself is unharmed, and the
    log names the setting once."""
    caplog.set_level("ERROR", logger="otel_identity")
    monkeypatch.setenv("OTEL_IDENTITY_FLASK_TENANT_OF", value)
    FlaskIdentityInstrumentor().instrument()
    client = app.test_client()
    client.post("/login/1")
    for _ in range(2):
        reply = client.get("/whoami")
        assert reply.status_code == 200
        assert reply.get_json()["identity"] is None
        assert reply.get_json()["kind"] == "User"  # Flask-Login itself is untouched
    lines = [r for r in caplog.records if "OTEL_IDENTITY_FLASK_TENANT_OF" in r.getMessage()]
    assert 1 <= len(lines) <= 2, [r.getMessage() for r in lines]  # at instrument, at login
    assert all(r.exc_info is None for r in lines)


def test_login_matching_a_trusted_identity_is_established_here_and_signed(app: Flask) -> None:
    """Under ``trust`` the baggage's claims are not this service's to sign; the same user
    authenticated by Flask-Login is, from the login alone (not the baggage's roles)."""
    import base64

    from otel_identity_http import IdentityWSGIMiddleware

    oi.configure(inbound="trust", signing_keys="k1:" + base64.b64encode(b"k" * 32).decode())
    FlaskIdentityInstrumentor().instrument(tenant_of=_tenant_of)

    @app.get("/outbound")
    def outbound() -> Any:
        flask_login.current_user.is_authenticated  # noqa: B018 - load the user, as a view would
        headers: dict[str, str] = {}
        oi.inject(headers)
        return jsonify(baggage=headers.get("baggage"))

    app.wsgi_app = IdentityWSGIMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    client = app.test_client()
    client.post("/login/1")
    forged = {"baggage": "user.id=1,tenant.id=acme,user.roles=admin"}
    sent = client.get("/outbound", headers=forged).get_json()["baggage"]
    assert "identity.sig=v1.k1." in sent and "admin" not in sent
    oi.configure(inbound="verify")
    verified = oi.get_identity(oi.extract({"baggage": sent}, hop="http.server"))
    assert verified == oi.Identity("1", "acme") and verified.verified
    # Not logged in: the trusted claims leave unsigned, and a verifier refuses them.
    oi.configure(inbound="trust")
    client.post("/logout")
    unsigned = client.get("/outbound", headers=forged).get_json()["baggage"]
    assert "user.id=1" in unsigned and "identity.sig" not in unsigned


def resolve_annotated(identity: oi.Identity) -> User | None:
    return resolve(identity)


@pytest.mark.parametrize(
    ("value", "level"), [("attr:nope", "warn"), ("attr:current_tenant", "info")]
)
def test_doctor_checks_attr_against_the_user_class_the_resolver_returns(
    monkeypatch: pytest.MonkeyPatch, value: str, level: str
) -> None:
    """User sets current_tenant in __init__ (invisible on the class): annotate it, as the
    check reads class attributes and annotations."""
    monkeypatch.setattr(User, "__annotations__", {"current_tenant": str}, raising=False)
    monkeypatch.setenv("OTEL_IDENTITY_RESOLVER", f"{__name__}:resolve_annotated")
    monkeypatch.setenv("OTEL_IDENTITY_FLASK_TENANT_OF", value)
    (finding,) = FlaskIdentityInstrumentor.doctor()
    assert finding[0] == level, finding
    if level == "warn":
        assert "the resolver's user class User declares no attribute 'nope'" in finding[1]


@pytest.mark.parametrize(
    ("value", "level"),
    [
        ("no.such.module:fn", "error"),
        ("attr:not an identifier", "error"),
        ("logging:DEBUG", "error"),
        ("attr:tenant", "info"),
        (f"{__name__}:tenant_by_function", "ok"),
    ],
)
def test_doctor_names_an_unusable_tenant_of_setting_as_an_error(
    monkeypatch: pytest.MonkeyPatch, value: str, level: str
) -> None:
    monkeypatch.setenv("OTEL_IDENTITY_FLASK_TENANT_OF", value)
    (finding,) = FlaskIdentityInstrumentor.doctor()
    assert finding[0] == level
    assert "OTEL_IDENTITY_FLASK_TENANT_OF" in finding[1]


def test_the_server_span_gets_the_logged_in_user_and_the_hop_counts_present(
    app: Flask, spans: Any
) -> None:
    """Under OpenTelemetry's Flask instrumentation and the HTTP hop (what
    ``opentelemetry-instrument`` loads), the server span starts before Flask-Login loads the
    user; it still ends with the user's identity, and the hop is counted ``present``."""
    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    from opentelemetry.trace import SpanKind
    from otel_identity_http import HttpServerIdentityInstrumentor

    oi.configure(inbound="strip")
    FlaskInstrumentor().instrument_app(app)  # type: ignore[no-untyped-call]
    HttpServerIdentityInstrumentor().instrument()
    try:
        FlaskIdentityInstrumentor().instrument(tenant_of=_tenant_of)
        client = app.test_client()
        client.post("/login/1")
        spans.clear()
        before = _telemetry.hop_counts()
        assert client.get("/whoami").get_json()["identity"] == ["1", "acme"]
        after = _telemetry.hop_counts()
    finally:
        HttpServerIdentityInstrumentor().uninstrument()
        FlaskInstrumentor().uninstrument_app(app)  # type: ignore[no-untyped-call]
    (server,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert server.attributes["user.id"] == "1"
    assert server.attributes["tenant.id"] == "acme"
    assert not [e for e in server.events if e.name == "identity.missing"]
    present = ("http.server", "present")
    missing = ("http.server", "missing")
    assert after.get(present, 0) - before.get(present, 0) == 1
    assert after.get(missing, 0) == before.get(missing, 0)


def test_a_request_that_never_reads_the_user_is_not_made_to_load_it(app: Flask, spans: Any) -> None:
    """Stamping the server span reads the identity the app's login yielded; it never asks
    Flask-Login for a user the app did not load."""
    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    from opentelemetry.trace import SpanKind
    from otel_identity_http import HttpServerIdentityInstrumentor

    oi.configure(inbound="strip")
    FlaskInstrumentor().instrument_app(app)  # type: ignore[no-untyped-call]
    HttpServerIdentityInstrumentor().instrument()
    try:
        FlaskIdentityInstrumentor().instrument(tenant_of=_tenant_of)
        client = app.test_client()
        client.post("/login/1")
        loaded = list(app.extensions["loaded"])
        spans.clear()
        assert client.get("/ping").data == b"pong"
    finally:
        HttpServerIdentityInstrumentor().uninstrument()
        FlaskInstrumentor().uninstrument_app(app)  # type: ignore[no-untyped-call]
    assert app.extensions["loaded"] == loaded  # no user_loader call for /ping
    (server,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert "user.id" not in server.attributes
