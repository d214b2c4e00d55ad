"""The two instrumentors: server middleware installed into frameworks, client transport patches.

    HttpServerIdentityInstrumentor().instrument(auth=[jwt_identity(...)])
    HttpClientIdentityInstrumentor().instrument()

Both are what ``opentelemetry-instrument`` loads through the ``opentelemetry_instrumentor``
entry points ``otel_identity_http_server`` and ``otel_identity_http_client``.
"""

from __future__ import annotations

import importlib
import weakref
from collections.abc import Collection, Sequence
from typing import Any

import wrapt
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, unwrap

from otel_identity_http import _client, _tap
from otel_identity_http._asgi import call_asgi
from otel_identity_http._server import HANDLED_KEY, AuthSource
from otel_identity_http._wsgi import call_wsgi
from otel_identity_http.package import _instruments


class _ServerOptions:
    """What ``instrument(**kwargs)`` configured; wrappers read it on every request."""

    def __init__(self) -> None:
        self.active = False
        self.auth: tuple[AuthSource, ...] = ()
        self.continue_trace: bool | None = None
        self.detected: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()

    def continue_trace_for(self, app: Any) -> bool:
        try:
            found = self.detected[app]
        except KeyError:
            found = self.detected[app] = _tap.install(app)
        except TypeError:  # not weak-referenceable: decide every time
            found = _tap.install(app)
        if self.continue_trace is not None:
            return self.continue_trace
        return not found


_options = _ServerOptions()

# (module, attribute path) of each framework's entry point wrapped by the server instrumentor.
_FLASK = ("flask.app", "Flask.__call__")
_STARLETTE = ("starlette.applications", "Starlette.__call__")
_DJANGO_WSGI = ("django.core.handlers.wsgi", "WSGIHandler.__call__")
_DJANGO_ASGI = ("django.core.handlers.asgi", "ASGIHandler.__call__")


def _wsgi_entry(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    if not _options.active or not is_instrumentation_enabled() or len(args) != 2 or kwargs:
        return wrapped(*args, **kwargs)
    environ, start_response = args
    if HANDLED_KEY in environ:  # a mounted application inside a request that is a hop already
        return wrapped(*args, **kwargs)
    return call_wsgi(
        wrapped,
        environ,
        start_response,
        auth=_options.auth,
        continue_trace=_options.continue_trace_for(instance),
    )


def _asgi_entry(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    if not _options.active or not is_instrumentation_enabled() or len(args) != 3 or kwargs:
        return wrapped(*args, **kwargs)
    scope, receive, send = args
    if scope.get("type") not in ("http", "websocket") or HANDLED_KEY in scope:
        return wrapped(*args, **kwargs)
    if getattr(instance, "middleware_stack", False) is None:
        # Starlette builds its stack at the first request; the OpenTelemetry middleware a
        # FastAPI/Starlette instrumentation puts there must be visible to find the tap's place.
        instance.middleware_stack = instance.build_middleware_stack()
    return call_asgi(
        wrapped,
        scope,
        receive,
        send,
        auth=_options.auth,
        continue_trace=_options.continue_trace_for(instance),
    )


def _patch(target: tuple[str, str], wrapper: Any) -> bool:
    module_name, attribute = target
    try:
        importlib.import_module(module_name)
    except ImportError:
        return False
    wrapt.wrap_function_wrapper(module_name, attribute, wrapper)
    return True


def _unpatch(target: tuple[str, str]) -> None:
    module_name, attribute = target
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return
    owner_name, method = attribute.rsplit(".", 1)
    owner: Any = module
    for part in owner_name.split("."):
        owner = getattr(owner, part)
    unwrap(owner, method)


class HttpServerIdentityInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Installs the identity middleware into Flask, Starlette/FastAPI and Django.

    Flask: around ``Flask.__call__`` (outside ``wsgi_app``, where OpenTelemetry's Flask
    instrumentation lives). Starlette/FastAPI: around ``Starlette.__call__`` (outside the
    middleware stack, where OpenTelemetry's FastAPI/Starlette instrumentation and
    ``add_middleware`` put theirs). Django: around the WSGI and ASGI handlers.
    ``instrument(auth=[...], continue_trace=None)`` take the meaning they have on the
    middleware.
    """

    _targets: Sequence[tuple[tuple[str, str], Any]] = (
        (_FLASK, _wsgi_entry),
        (_STARLETTE, _asgi_entry),
        (_DJANGO_WSGI, _wsgi_entry),
        (_DJANGO_ASGI, _asgi_entry),
    )

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        _options.auth = tuple(kwargs.get("auth") or ())
        _options.continue_trace = kwargs.get("continue_trace")
        _options.detected = weakref.WeakKeyDictionary()
        for target, wrapper in self._targets:
            _patch(target, wrapper)
        _options.active = True

    def _uninstrument(self, **kwargs: Any) -> None:
        _options.active = False
        for target, _wrapper in self._targets:
            _unpatch(target)


_CLIENT_TARGETS: Sequence[tuple[tuple[str, str], Any]] = (
    (("requests.adapters", "HTTPAdapter.send"), _client.wrap_requests_send),
    (("urllib3.connection", "HTTPConnection.request"), _client.wrap_urllib3_request),
    (("http.client", "HTTPConnection.request"), _client.wrap_http_client_request),
    (("httpcore", "ConnectionPool.handle_request"), _client.wrap_httpcore_request),
    (("httpcore", "AsyncConnectionPool.handle_async_request"), _client.wrap_httpcore_request),
    (("aiohttp.client_reqrep", "ClientRequest.send"), _client.wrap_aiohttp_send),
)


class HttpClientIdentityInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Identity on outgoing requests of requests, httpx, urllib3, aiohttp, urllib.request and
    ``http.client``, with egress filtering at the transport (after every other
    instrumentation has injected), on every redirect hop."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        for target, wrapper in _CLIENT_TARGETS:
            _patch(target, wrapper)

    def _uninstrument(self, **kwargs: Any) -> None:
        for target, _wrapper in _CLIENT_TARGETS:
            _unpatch(target)
