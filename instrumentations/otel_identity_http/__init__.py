"""otel-identity for HTTP: server middleware (WSGI, ASGI), edge authentication, client egress.

Server side, every request is an ``http.server`` hop (inbound policy, accounting, anonymous
routes, ``identity.missing`` on the server span), by hand or installed into Flask,
Starlette/FastAPI and Django by the instrumentor::

    from otel_identity_http import IdentityWSGIMiddleware, IdentityASGIMiddleware, jwt_identity

    app.wsgi_app = IdentityWSGIMiddleware(app.wsgi_app)
    asgi_app = IdentityASGIMiddleware(asgi_app, auth=[
        jwt_identity(key=PUBLIC_KEY, algorithms=["RS256"], audience="orders"),
    ])
    HttpServerIdentityInstrumentor().instrument()         # or: installs it for you

Identity from the app's own authentication: ``jwt_identity`` (a verified bearer token),
``StarletteUserIdentityMiddleware`` (``request.user``), ``otel_identity_http.django.
IdentityUserMiddleware`` (Django's ``request.user``); Flask-Login is ``otel_identity_flask``.

Client side, requests, httpx, urllib3, aiohttp, urllib.request and ``http.client`` carry
identity, and egress filtering runs at the transport, on every redirect hop: a destination
outside ``egress_allow`` (or a plain-HTTP proxy outside it) never receives identity::

    HttpClientIdentityInstrumentor().instrument()
"""

from __future__ import annotations

from otel_identity_http._asgi import IdentityASGIMiddleware
from otel_identity_http._instrumentors import (
    HttpClientIdentityInstrumentor,
    HttpServerIdentityInstrumentor,
)
from otel_identity_http._jwt import jwt_identity
from otel_identity_http._server import (
    AuthResult,
    AuthSource,
    Rejected,
    RequestView,
    mark_authenticated,
)
from otel_identity_http._shapes import EnvironGetter, ScopeGetter
from otel_identity_http._users import StarletteUserIdentityMiddleware, identity_from_user
from otel_identity_http._wsgi import IdentityWSGIMiddleware

__all__ = [
    "AuthResult",
    "AuthSource",
    "EnvironGetter",
    "HttpClientIdentityInstrumentor",
    "HttpServerIdentityInstrumentor",
    "IdentityASGIMiddleware",
    "IdentityWSGIMiddleware",
    "Rejected",
    "RequestView",
    "ScopeGetter",
    "StarletteUserIdentityMiddleware",
    "identity_from_user",
    "jwt_identity",
    "mark_authenticated",
]
