"""Submit side of the Dask hop: ``Client.submit`` and ``Client.map`` wrap the callable.

The identity is captured in the caller's context when the task is submitted (not when it
runs) and travels in the task spec as a ``TaskCall``; see ``_task``. The first call through a
synchronous client also registers the settings plugin (``_settings``) on its workers, and
again whenever the client's ``OTEL_IDENTITY_*`` environment changed since.
"""

from __future__ import annotations

import inspect
import logging
import threading
import weakref
from collections.abc import Callable, Collection
from typing import Any

import wrapt
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, unwrap

import otel_identity as oi
from otel_identity_dask._task import TaskCall, carrier_of_current, identity_digest
from otel_identity_dask.package import _instruments

_log = logging.getLogger("otel_identity")
_lock = threading.Lock()
# The environment last registered on each client's workers.
_registered: weakref.WeakKeyDictionary[Any, dict[str, str]] = weakref.WeakKeyDictionary()
_warned: set[str] = set()


def _log_once(what: str) -> None:
    if what not in _warned:
        _warned.add(what)
        _log.exception("otel-identity: internal error in the Dask %s hook", what)


def _wrappable(func: object, kwargs: dict[str, Any]) -> bool:
    # Actors are classes instantiated on a worker, and coroutine functions run on the
    # worker's event loop: neither goes through a TaskCall (see the docs' limits).
    return (
        callable(func)
        and not isinstance(func, (type, TaskCall))
        and not inspect.iscoroutinefunction(func)
        and not kwargs.get("actor")
        and not kwargs.get("actors")
    )


def _in_worker() -> bool:
    from distributed import get_worker

    try:
        get_worker()
    except ValueError:
        return False
    return True


def _ensure_settings(client: Any) -> None:
    """Register the caller's settings on ``client``'s workers if they changed."""
    from otel_identity_dask import _settings  # imports distributed: only once it is in use

    if getattr(client, "asynchronous", False) or _in_worker():
        return  # an async client registers settings_plugin() itself; workers have them
    environment = _settings.identity_environment()
    with _lock:
        if _registered.get(client) == environment:
            return
        _registered[client] = environment
    try:
        client.register_plugin(
            _settings.IdentitySettingsPlugin(environment), name=_settings.PLUGIN_NAME
        )
    except Exception as exc:  # noqa: BLE001 - the caller's submit goes on regardless
        _settings.log_setup_failure(exc)


def _task_call(func: Callable[..., Any]) -> TaskCall:
    return TaskCall(func, carrier_of_current(), identity_digest(oi.get_identity()))


def _wrap_submit(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    if not args or not is_instrumentation_enabled() or not _wrappable(args[0], kwargs):
        return wrapped(*args, **kwargs)
    try:
        call = _task_call(args[0])
        _ensure_settings(instance)
    except Exception:  # noqa: BLE001 - never break the caller: submit as it was
        _log_once("submit")
        return wrapped(*args, **kwargs)
    return wrapped(call, *args[1:], **kwargs)


class DaskIdentityInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Carries identity from ``Client.submit``/``map`` into each task, per task."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        wrapt.wrap_function_wrapper("distributed.client", "Client.submit", _wrap_submit)
        wrapt.wrap_function_wrapper("distributed.client", "Client.map", _wrap_submit)

    def _uninstrument(self, **kwargs: Any) -> None:
        from distributed.client import Client

        unwrap(Client, "submit")
        unwrap(Client, "map")
        with _lock:
            _registered.clear()
