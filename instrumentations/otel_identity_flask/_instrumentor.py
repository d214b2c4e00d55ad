"""``FlaskIdentityInstrumentor``: Flask-Login's user becomes the request's identity, and
``flask_login.current_user`` stays valid on every hop the request makes."""

from __future__ import annotations

import os
import threading
import typing
from collections.abc import Collection
from typing import Any, cast

from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper

from otel_identity import ConfigurationError
from otel_identity.instrumentation import import_object, logger
from otel_identity_flask import _hooks
from otel_identity_flask._hooks import REGISTRY, AppConfig, TenantOf
from otel_identity_flask.package import _instruments

_lock = threading.Lock()
_installed = False


def _sync_hooks() -> None:
    """Install the class-level hooks while anything uses them, remove them after."""
    global _installed
    import flask.ctx
    import flask_login
    import flask_login.login_manager
    import flask_login.utils

    with _lock:
        if REGISTRY.in_use and not _installed:
            wrap_function_wrapper(flask.ctx.RequestContext, "push", _hooks.wrap_request_push)
            wrap_function_wrapper(flask.ctx.RequestContext, "pop", _hooks.wrap_request_pop)
            wrap_function_wrapper(
                flask_login.login_manager.LoginManager,
                "_update_request_context_with_user",
                _hooks.wrap_update_user,
            )
            wrap_function_wrapper(flask_login.utils, "_get_user", _hooks.wrap_get_user)
            flask_login.user_logged_out.connect(_hooks.on_logged_out, weak=False)
            _installed = True
        elif not REGISTRY.in_use and _installed:
            unwrap(flask.ctx.RequestContext, "push")
            unwrap(flask.ctx.RequestContext, "pop")
            unwrap(flask_login.login_manager.LoginManager, "_update_request_context_with_user")
            unwrap(flask_login.utils, "_get_user")
            flask_login.user_logged_out.disconnect(_hooks.on_logged_out)
            _installed = False


TENANT_OF_ENV = "OTEL_IDENTITY_FLASK_TENANT_OF"


def tenant_of_from_environment() -> TenantOf | None:
    """``tenant_of`` for ``opentelemetry-instrument``, which passes no arguments.

    ``OTEL_IDENTITY_FLASK_TENANT_OF`` is ``module:function`` (called with the user) or
    ``attr:name`` (the user's attribute). Read when instrumenting, never at import. A value
    that cannot be used never stops the app: it is logged once, and the bridge fails closed
    (a logged-in request carries no identity rather than one without its tenant), as does an
    ``attr:name`` that the user object does not have.
    """
    spec = os.environ.get(TENANT_OF_ENV, "").strip()
    if not spec:
        return None
    tenant_of, problem = _tenant_of(spec)
    if tenant_of is not None:
        return tenant_of
    message = f"{TENANT_OF_ENV}={spec!r}: {problem}"
    logger.error("otel-identity: %s; logged-in requests carry no identity", message)

    def refuse(user: Any) -> str | None:
        raise ConfigurationError(message)

    return refuse


def _tenant_of(spec: str) -> tuple[TenantOf | None, str]:
    """(``tenant_of``, "") for a usable setting, else (None, what is wrong with it)."""
    if spec.startswith("attr:"):
        name = spec[len("attr:") :].strip()
        if not name.isidentifier():
            return None, f"{name!r} is not an attribute name"

        def attribute(user: Any) -> str | None:
            try:
                return cast("str | None", getattr(user, name))
            except AttributeError:
                raise ConfigurationError(
                    f"{TENANT_OF_ENV}='attr:{name}': the user "
                    f"({type(user).__name__}) has no attribute {name!r}"
                ) from None

        return attribute, ""
    if ":" not in spec:
        return None, "neither module:function nor attr:name"
    try:
        target = import_object(spec)
    except Exception as exc:  # noqa: BLE001 - a bad setting must not stop the app
        return None, f"cannot import it ({type(exc).__name__}: {exc})"
    if not callable(target):
        return None, "not callable"
    return cast("TenantOf", target), ""


def _check_attribute(spec: str, name: str) -> tuple[str, str]:
    """doctor's best guess at ``attr:name``: the user class the resolver says it returns
    (its return annotation) should have that attribute, by class attribute or annotation.
    Only a warning: an attribute set in ``__init__`` is invisible to this check."""
    lacking = [cls.__name__ for cls in _resolver_user_classes() if not _declares(cls, name)]
    if lacking:
        said = f"the resolver's user class {', '.join(lacking)} declares no attribute {name!r}"
        return ("warn", f"{TENANT_OF_ENV}={spec!r}: {said}; a user without it gets no identity")
    checked = "checked at each login (a user without it gets no identity, logged)"
    return ("info", f"{TENANT_OF_ENV}={spec!r}: {checked}")


def _resolver_user_classes() -> list[type]:
    spec = os.environ.get("OTEL_IDENTITY_RESOLVER", "").strip()
    if ":" not in spec:
        return []
    try:
        returns = typing.get_type_hints(import_object(spec)).get("return")
    except Exception:  # noqa: BLE001 - no usable annotation: nothing to check against
        return []
    candidates = typing.get_args(returns) or (returns,)
    return [c for c in candidates if isinstance(c, type) and c is not type(None)]


def _declares(cls: type, name: str) -> bool:
    if hasattr(cls, name):
        return True
    try:
        return name in typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - annotations that cannot be resolved: do not guess
        return True


class FlaskIdentityInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """``instrument(tenant_of=None)`` for every app, or ``instrument_app(app)`` for one.

    ``tenant_of(user) -> str | None`` names the tenant of a Flask-Login user. Register the
    otel-identity resolver (``oi.set_user_resolver``) to rebuild users on other hops.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        tenant_of = kwargs.get("tenant_of") or tenant_of_from_environment()
        REGISTRY.global_config = AppConfig(tenant_of=tenant_of)
        _sync_hooks()

    def _uninstrument(self, **kwargs: Any) -> None:
        REGISTRY.global_config = None
        _sync_hooks()

    @staticmethod
    def doctor() -> list[tuple[str, str]]:
        """``otel-identity doctor``'s check of ``OTEL_IDENTITY_FLASK_TENANT_OF``."""
        spec = os.environ.get(TENANT_OF_ENV, "").strip()
        if not spec:
            return []
        tenant_of, problem = _tenant_of(spec)
        if tenant_of is None:
            return [("error", f"{TENANT_OF_ENV}={spec!r}: {problem}")]
        if spec.startswith("attr:"):
            return [_check_attribute(spec, spec[len("attr:") :].strip())]
        return [("ok", f"{TENANT_OF_ENV}={spec!r} imports")]

    @staticmethod
    def instrument_app(app: Any, *, tenant_of: TenantOf | None = None) -> None:
        """Bridge one app only (idempotent; a second call updates ``tenant_of``)."""
        with _lock:
            if not isinstance(app.extensions.get(_hooks.EXTENSION), AppConfig):
                REGISTRY.apps += 1
            app.extensions[_hooks.EXTENSION] = AppConfig(tenant_of=tenant_of)
        _sync_hooks()

    @staticmethod
    def uninstrument_app(app: Any) -> None:
        with _lock:
            if isinstance(app.extensions.pop(_hooks.EXTENSION, None), AppConfig):
                REGISTRY.apps -= 1
        _sync_hooks()
