"""Django: identity from ``request.user``, for the rest of the request and every hop it makes.

    MIDDLEWARE = [
        ...,
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "otel_identity_http.django.IdentityUserMiddleware",
    ]
    OTEL_IDENTITY_DJANGO = {"tenant_of": "myapp.identity.tenant_of"}  # optional mappings

The ``http.server`` hop itself is ``HttpServerIdentityInstrumentor`` (around Django's WSGI and
ASGI handlers). Mappings (``user_id_of``, ``tenant_of``, ``roles_of``, ``session_of``) are
dotted paths in the ``OTEL_IDENTITY_DJANGO`` setting, or attributes of a subclass.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import context as otel_context

import otel_identity as oi
from otel_identity_http._server import mark_authenticated
from otel_identity_http._users import UserFn, identity_from_user

_MAPPINGS = ("user_id_of", "tenant_of", "roles_of", "session_of")


class IdentityUserMiddleware:
    """Sets identity from Django's authenticated ``request.user`` (sync and async)."""

    sync_capable = True
    async_capable = True
    user_id_of: UserFn | None = None
    tenant_of: UserFn | None = None
    roles_of: UserFn | None = None
    session_of: UserFn | None = None

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        from asgiref.sync import iscoroutinefunction, markcoroutinefunction
        from django.conf import settings  # type: ignore[import-untyped]
        from django.utils.module_loading import import_string  # type: ignore[import-untyped]

        self.get_response = get_response
        configured: dict[str, str] = getattr(settings, "OTEL_IDENTITY_DJANGO", {}) or {}
        self._mappings: dict[str, UserFn | None] = {}
        for name in _MAPPINGS:
            spec = configured.get(name)
            self._mappings[name] = import_string(spec) if spec else getattr(type(self), name)
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def _identity(self, user: Any) -> oi.Identity | None:
        return identity_from_user(user, **self._mappings)

    def __call__(self, request: Any) -> Any:
        if self._async:
            return self._acall(request)
        identity = self._identity(getattr(request, "user", None))
        if identity is None:
            return self.get_response(request)
        token = otel_context.attach(oi.set_identity(identity))
        try:
            mark_authenticated()
            return self.get_response(request)
        finally:
            otel_context.detach(token)

    async def _acall(self, request: Any) -> Any:
        auser = getattr(request, "auser", None)
        user = await auser() if auser is not None else getattr(request, "user", None)
        identity = self._identity(user)
        response: Awaitable[Any]
        if identity is None:
            response = self.get_response(request)
            return await response
        token = otel_context.attach(oi.set_identity(identity))
        try:
            mark_authenticated()
            response = self.get_response(request)
            return await response
        finally:
            otel_context.detach(token)
