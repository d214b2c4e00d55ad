"""The three patch points of the Flask-Login bridge, and who they are on for.

* ``flask.ctx.RequestContext.push``/``pop``: a request of an instrumented app ends on exactly
  the context it started on, whatever was attached inside it (the identity set below
  included). Below ``wsgi_app``, so it holds however the app's WSGI callable is wrapped.
* ``LoginManager._update_request_context_with_user``: the one place every Flask-Login path
  (session, remember cookie, request loader, ``login_user``) stores the request's user; once
  it holds an authenticated user, the request's identity is set from it, so every hop the
  request makes from then on carries it.
* ``flask_login.utils._get_user``: what ``flask_login.current_user`` calls. Inside a request it
  is left alone; on a hop with an identity but no request context of its own (a pool branch,
  a thread, a child process) it answers with the user the otel-identity resolver rebuilds
  there, where Flask-Login would answer ``None``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import current_app, g, has_app_context, has_request_context, request
from opentelemetry import context as otel_context
from opentelemetry.instrumentation.utils import is_instrumentation_enabled

import otel_identity as oi
from otel_identity import instrumentation as oii
from otel_identity.instrumentation import is_established

TenantOf = Callable[[Any], "str | None"]

EXTENSION = "otel_identity_flask"
_SERVED = "otel_identity_flask.served"  # WSGI environ: pushed while the bridge was on
_TOKENS = "_otel_identity_tokens"  # on the RequestContext (pushed more than once, at times)


@dataclass(frozen=True)
class AppConfig:
    tenant_of: TenantOf | None = None


class _Registry:
    """Global ``instrument()`` settings; per-app ones live in ``app.extensions``."""

    def __init__(self) -> None:
        self.global_config: AppConfig | None = None
        self.apps = 0

    def config_for(self, app: Any) -> AppConfig | None:
        extensions = getattr(app, "extensions", None)
        own = extensions.get(EXTENSION) if isinstance(extensions, dict) else None
        if isinstance(own, AppConfig):
            return own
        return self.global_config

    @property
    def in_use(self) -> bool:
        return self.global_config is not None or self.apps > 0


REGISTRY = _Registry()


def wrap_request_push(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    result = wrapped(*args, **kwargs)
    if REGISTRY.config_for(instance.app) is not None and is_instrumentation_enabled():
        # A no-op attach whose token brings the thread back to this exact context when the
        # request context is popped: the identity attached mid-request has no detach of its
        # own, and other instrumentations detach their tokens out of order at teardown, so
        # nothing else reliably restores a server thread that goes on to the next request.
        instance.request.environ[_SERVED] = True
        # One stack per thread: a token can only be detached in the thread that made it.
        stacks = instance.__dict__.setdefault(_TOKENS, {})
        stacks.setdefault(threading.get_ident(), []).append(
            otel_context.attach(otel_context.get_current())
        )
    return result


def wrap_request_pop(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    try:
        return wrapped(*args, **kwargs)
    finally:
        tokens = instance.__dict__.get(_TOKENS, {}).get(threading.get_ident())
        if tokens:
            otel_context.detach(tokens.pop())


def wrap_update_user(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    result = wrapped(*args, **kwargs)
    if is_instrumentation_enabled():
        try:
            _identity_from_login()
        except Exception:  # noqa: BLE001 - never break the request
            oii.log_internal_error("flask.login")
    return result


def _identity_from_login() -> None:
    if not has_request_context() or not request.environ.get(_SERVED):
        return
    config = REGISTRY.config_for(current_app)
    if config is None:
        return
    user = g.get("_login_user")
    claims = _claims_of(user, config)
    if claims is None:
        return
    current = oi.get_identity()
    # The same claims, established here or verified, stay; claims that arrived on trust are
    # set again from the login (its own authentication), so they may be signed.
    if current is not None and (current.user_id, current.tenant_id) == claims and is_established():
        return
    try:
        ctx = oi.set_identity(user_id=claims[0], tenant_id=claims[1])
    except (TypeError, ValueError) as exc:  # a value that cannot travel (control chars, ...)
        _log_bad_user(exc)
        return
    otel_context.attach(ctx)


def _claims_of(user: Any, config: AppConfig) -> tuple[str, str | None] | None:
    """(user id, tenant) of an authenticated Flask-Login user; None for anonymous or bad data.

    ``get_id``, ``is_authenticated`` and ``tenant_of`` are the application's code: a failure
    there leaves the request without identity (fail closed) and is logged once, not raised.
    """
    try:
        if user is None or not user.is_authenticated:
            return None
        user_id = user.get_id()
        tenant = config.tenant_of(user) if config.tenant_of is not None else None
        if user_id is None:
            return None
        return (str(user_id), None if tenant is None else str(tenant))
    except Exception as exc:  # noqa: BLE001
        _log_bad_user(exc)
        return None


def _log_bad_user(exc: Exception) -> None:
    if isinstance(exc, oi.ConfigurationError):  # a bad setting: say which, once
        oii.log_once(
            logging.ERROR,
            ("flask.setting", str(exc)),
            "otel-identity: %s; logged-in requests carry no identity until it is fixed",
            exc,
        )
        return
    oii.log_once(
        logging.WARNING,
        ("flask.claims", type(exc).__qualname__),
        "otel-identity: could not take identity from the Flask-Login user (%s); "
        "this request carries none",
        type(exc).__qualname__,
    )


def on_logged_out(sender: Any, **extra: Any) -> None:
    """``user_logged_out``: the rest of the request runs, and hands over, no identity."""
    if not is_instrumentation_enabled() or not has_request_context():
        return
    if not request.environ.get(_SERVED) or REGISTRY.config_for(current_app) is None:
        return
    if oi.get_identity() is not None:
        otel_context.attach(oi.clear_identity())


def wrap_get_user(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if has_request_context() or not is_instrumentation_enabled():
        return wrapped(*args, **kwargs)
    if has_app_context() and REGISTRY.config_for(current_app) is None:
        return wrapped(*args, **kwargs)
    try:
        user = oi.get_current_user() if oi.get_identity() is not None else None
    except Exception:  # noqa: BLE001 - the resolver's own errors are handled by the core
        oii.log_internal_error("flask.current_user")
        user = None
    return user if user is not None else wrapped(*args, **kwargs)
