"""Django: the hop around the WSGI/ASGI handlers, identity from ``request.user`` (real auth)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware as OtelASGI
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware as OtelWSGI
from otel_identity_http import HttpServerIdentityInstrumentor

import otel_identity as oi
from otel_identity import names

from .conftest import Server
from .test_otel_identity_http_server import _events, _server_span, wait_for_server_spans


def tenant_of(user: Any) -> str:
    return f"tenant-of-{user.username}"


def login_view(request: Any) -> Any:
    from django.contrib.auth import authenticate, login
    from django.http import HttpResponse

    user = authenticate(request, username=request.POST["username"], password=request.POST["pw"])
    if user is None:
        return HttpResponse("no", status=403)
    login(request, user)
    return HttpResponse("ok")


def whoami_view(request: Any) -> Any:
    from django.http import JsonResponse

    identity = oi.get_identity()
    return JsonResponse(
        {
            "user": identity.user_id if identity else None,
            "tenant": identity.tenant_id if identity else None,
        }
    )


def _urls() -> list[Any]:
    from django.urls import path
    from django.views.decorators.csrf import csrf_exempt

    return [path("login", csrf_exempt(login_view)), path("whoami", whoami_view)]


urlpatterns: list[Any] = []


@pytest.fixture(scope="module")
def django_site(tmp_path_factory: pytest.TempPathFactory) -> None:
    django = pytest.importorskip("django")
    from django.conf import settings

    if not settings.configured:
        db = Path(tmp_path_factory.mktemp("django")) / "db.sqlite3"
        settings.configure(
            SECRET_KEY="tests-only",
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF=__name__,
            INSTALLED_APPS=[
                "django.contrib.auth",
                "django.contrib.contenttypes",
                "django.contrib.sessions",
            ],
            MIDDLEWARE=[
                "django.contrib.sessions.middleware.SessionMiddleware",
                "django.contrib.auth.middleware.AuthenticationMiddleware",
                "otel_identity_http.django.IdentityUserMiddleware",
            ],
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(db)}},
            OTEL_IDENTITY_DJANGO={"tenant_of": f"{__name__}.tenant_of"},
            PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
            USE_TZ=True,
        )
        django.setup()
        from django.contrib.auth.models import User
        from django.core.management import call_command

        urlpatterns[:] = _urls()
        call_command("migrate", verbosity=0)
        User.objects.create_user("alice", password="pw")


@pytest.fixture
def instrumented() -> Iterator[None]:
    instrumentor = HttpServerIdentityInstrumentor()
    instrumentor.instrument()
    yield
    instrumentor.uninstrument()


def _login_and_ask(handle: Server) -> tuple[dict[str, Any], dict[str, Any]]:
    session = requests.Session()
    anonymous = session.get(handle.url("/whoami"), headers={"baggage": "user.id=x"}, timeout=10)
    login = session.post(handle.url("/login"), data={"username": "alice", "pw": "pw"}, timeout=10)
    assert login.status_code == 200
    known = session.get(handle.url("/whoami"), timeout=10)
    return anonymous.json(), known.json()


def test_django_wsgi_request_user_becomes_the_identity(
    django_site: None, instrumented: None, wsgi_server: Callable[..., Server], spans: Any
) -> None:
    from django.core.handlers.wsgi import WSGIHandler

    oi.configure(inbound="strip")
    handle = wsgi_server(OtelWSGI(WSGIHandler()))
    session = requests.Session()
    anonymous = session.get(handle.url("/whoami"), headers={"baggage": "user.id=x"}, timeout=10)
    assert anonymous.json() == {"user": None, "tenant": None}
    assert len(_events(_server_span(spans), names.EVENT_MISSING)) == 1
    assert session.post(handle.url("/login"), data={"username": "alice", "pw": "pw"}).ok
    wait_for_server_spans(spans, 2)  # the login's span ends after its response
    spans.clear()
    known = session.get(handle.url("/whoami"), timeout=10).json()
    assert known["user"] is not None
    assert known["tenant"] == "tenant-of-alice"
    server = _server_span(spans)
    assert _events(server, names.EVENT_MISSING) == []
    # The server span started before Django's auth ran; it still says who asked.
    assert server.attributes is not None
    assert server.attributes[names.USER_ID] == known["user"]
    assert server.attributes[names.TENANT_ID] == "tenant-of-alice"


def test_django_asgi_request_user_becomes_the_identity(
    django_site: None, instrumented: None, asgi_server: Callable[..., Server]
) -> None:
    from django.core.handlers.asgi import ASGIHandler

    oi.configure(inbound="strip")
    handle = asgi_server(OtelASGI(ASGIHandler()))
    anonymous, known = _login_and_ask(handle)
    assert anonymous == {"user": None, "tenant": None}
    assert known["tenant"] == "tenant-of-alice"
