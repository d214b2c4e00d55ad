"""Identity from the user object a framework's own authentication produced.

    app = Starlette(routes=..., middleware=[
        Middleware(AuthenticationMiddleware, backend=MyBackend()),
        Middleware(StarletteUserIdentityMiddleware, tenant_of=lambda user: user.tenant),
    ])

The framework decides who is logged in; these pieces only copy that decision into the
identity, for the rest of the request and every hop it makes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry import context as otel_context

import otel_identity as oi
from otel_identity import instrumentation as oii
from otel_identity_http._server import mark_authenticated
from otel_identity_http._shapes import ASGIApp, Receive, Scope, Send

UserFn = Callable[[Any], Any]

_ID_ATTRIBUTES = ("identity", "pk", "id", "username")


def _default_user_id(user: Any) -> Any:
    for attribute in _ID_ATTRIBUTES:
        try:
            value = getattr(user, attribute, None)
        except NotImplementedError:  # starlette's SimpleUser.identity
            continue
        if value is not None and value != "":
            return value
    return None


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


def identity_from_user(
    user: Any,
    *,
    user_id_of: UserFn | None = None,
    tenant_of: UserFn | None = None,
    roles_of: UserFn | None = None,
    session_of: UserFn | None = None,
) -> oi.Identity | None:
    """The identity of an authenticated framework user; None for anonymous or on error.

    ``user_id_of`` defaults to the first of ``identity``, ``pk``, ``id``, ``username``; the
    other mappings default to nothing. A mapping that raises is logged once and the request is
    treated as unauthenticated (fail closed), never raised.
    """
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    try:
        user_id = _text((user_id_of or _default_user_id)(user))
        tenant_id = _text(tenant_of(user)) if tenant_of else None
        session_id = _text(session_of(user)) if session_of else None
        roles_value: Iterable[Any] = roles_of(user) if roles_of else ()
        if isinstance(roles_value, str):
            roles_value = (roles_value,)
        roles = tuple(str(r) for r in roles_value or ())
        identity = oi.Identity(user_id, tenant_id, session_id, roles)
        if identity.is_empty:
            return None
        oi.set_identity(identity, context=otel_context.Context())  # validates the claims
        return identity
    except Exception as exc:  # noqa: BLE001 - the app's mapping must not break its request
        oii.log_once(
            logging.WARNING,
            ("identity_from_user", type(exc).__name__),
            "otel-identity: mapping the authenticated user to an identity failed (%s); "
            "the request runs without identity",
            type(exc).__name__,
        )
        return None


class StarletteUserIdentityMiddleware:
    """Sets identity from ``request.user`` (``scope["user"]``) for the rest of the request.

    Put it after Starlette's ``AuthenticationMiddleware``. Roles default to the scopes of
    ``request.auth`` (``AuthCredentials``); pass ``roles_of`` to map them from the user.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        user_id_of: UserFn | None = None,
        tenant_of: UserFn | None = None,
        roles_of: UserFn | None = None,
        session_of: UserFn | None = None,
    ) -> None:
        self.app = app
        self.user_id_of = user_id_of
        self.tenant_of = tenant_of
        self.roles_of = roles_of
        self.session_of = session_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") not in ("http", "websocket") or "user" not in scope:
            await self.app(scope, receive, send)
            return
        roles_of = self.roles_of
        if roles_of is None:
            scopes = tuple(getattr(scope.get("auth"), "scopes", ()) or ())

            def roles_of(_user: Any) -> Iterable[str]:
                return scopes

        identity = identity_from_user(
            scope["user"],
            user_id_of=self.user_id_of,
            tenant_of=self.tenant_of,
            roles_of=roles_of,
            session_of=self.session_of,
        )
        if identity is None:
            await self.app(scope, receive, send)
            return
        token = otel_context.attach(oi.set_identity(identity))
        try:
            mark_authenticated()
            await self.app(scope, receive, send)
        finally:
            otel_context.detach(token)
