"""Submit side of the Dask hop: the callable or the collection's graph is wrapped.

``Client.submit``/``map`` wrap the callable; ``Client.compute``/``persist`` and
``dask.compute`` (``x.compute()``) with a distributed client as scheduler rewrite the
collections' graphs (``_graphs``). Either way the identity is captured in the caller's
context when the work is handed over (not when it runs) and travels in the task spec as a
``TaskCall``; see ``_task``. The first call through a
synchronous client also registers the settings plugin (``_settings``) on its workers, and
again whenever the client's ``OTEL_IDENTITY_*`` environment changed since.
"""

from __future__ import annotations

import inspect
import logging
import threading
import weakref
from collections.abc import Callable, Collection, Iterator
from typing import Any

import wrapt
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, unwrap

import otel_identity as oi
from otel_identity.instrumentation import identity_environment
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


def instrument_worker() -> None:
    """Instruments a worker process (``IdentitySettingsPlugin`` calls it there), so a task's
    own submissions carry the task's identity."""
    instrumentor = DaskIdentityInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()


def settings_plugin() -> Any:
    """A worker plugin with this process's ``OTEL_IDENTITY_*`` settings, for an async client:
    ``await client.register_plugin(settings_plugin())``."""
    from otel_identity_dask import _settings  # imports distributed: only once it is in use

    return _settings.IdentitySettingsPlugin(identity_environment(), instrument_worker)


def _ensure_settings(client: Any) -> None:
    """Register the caller's settings on ``client``'s workers if they changed."""
    from otel_identity_dask import _settings  # imports distributed: only once it is in use

    if getattr(client, "asynchronous", False) or _in_worker():
        return  # an async client registers settings_plugin() itself; workers have them
    environment = identity_environment()
    with _lock:
        if _registered.get(client) == environment:
            return
        _registered[client] = environment
    try:
        client.register_plugin(
            _settings.IdentitySettingsPlugin(environment, instrument_worker),
            name=_settings.PLUGIN_NAME,
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


def _one(item: Any, carrier: dict[str, str], digest: str, traverse: bool) -> Any:
    from dask.base import is_dask_collection
    from dask.delayed import delayed

    from otel_identity_dask import _graphs

    if traverse and isinstance(item, (list, set, tuple, dict, Iterator)):
        item = delayed(item)  # what compute does with containers, done first
    if is_dask_collection(item):
        return _graphs.with_identity(item, carrier, digest)
    return item


def _with_identity(collections: Any, traverse: bool) -> Any:
    carrier, digest = carrier_of_current(), identity_digest(oi.get_identity())
    if isinstance(collections, (list, tuple, set, frozenset)):
        return [_one(item, carrier, digest, traverse) for item in collections]
    return _one(collections, carrier, digest, traverse)


def _wrap_client_collections(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """``Client.compute``/``persist(collections, ...)``."""
    if not args or not is_instrumentation_enabled() or not _collections_supported():
        return wrapped(*args, **kwargs)
    try:
        collections = _with_identity(args[0], bool(kwargs.get("traverse", True)))
        _ensure_settings(instance)
    except Exception:  # noqa: BLE001 - never break the caller: compute as it was
        _log_once("compute")
        return wrapped(*args, **kwargs)
    return wrapped(collections, *args[1:], **kwargs)


def _client_scheduling(args: Any, kwargs: Any) -> Any:
    """The distributed client ``dask.compute`` would hand ``args`` to, or None."""
    from dask.base import get_scheduler, is_dask_collection
    from distributed import Client

    collections = [a for a in args if is_dask_collection(a)]
    schedule = get_scheduler(  # type: ignore[no-untyped-call]
        scheduler=kwargs.get("scheduler"), collections=collections, get=kwargs.get("get")
    )
    client = getattr(schedule, "__self__", None)
    return client if isinstance(client, Client) else None


def _wrap_dask_compute(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """``dask.compute(*collections, ...)``, and so ``x.compute()``, on a distributed client."""
    if not args or not is_instrumentation_enabled() or not _collections_supported():
        return wrapped(*args, **kwargs)
    try:
        client = _client_scheduling(args, kwargs)
        if client is None:
            return wrapped(*args, **kwargs)
        traverse = bool(kwargs.get("traverse", True))
        carrier, digest = carrier_of_current(), identity_digest(oi.get_identity())
        new_args = [_one(item, carrier, digest, traverse) for item in args]
        _ensure_settings(client)
    except Exception:  # noqa: BLE001
        _log_once("dask.compute")
        return wrapped(*args, **kwargs)
    return wrapped(*new_args, **kwargs)


_supported: bool | None = None


def _collections_supported() -> bool:
    """Whether this Dask has the task spec ``_graphs`` needs (logged once when not)."""
    global _supported
    if _supported is None:
        from otel_identity_dask import _graphs

        absent = _graphs.missing()
        _supported = not absent
        if absent:
            _log.error(
                "otel-identity: this Dask lacks %s; computed collections carry no identity "
                "(submit and map still do)",
                ", ".join(absent),
            )
    return _supported


class DaskIdentityInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Carries identity from ``Client.submit``/``map`` into each task, per task."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        wrapt.wrap_function_wrapper("distributed.client", "Client.submit", _wrap_submit)
        wrapt.wrap_function_wrapper("distributed.client", "Client.map", _wrap_submit)
        for method in ("compute", "persist"):
            wrapt.wrap_function_wrapper(
                "distributed.client", f"Client.{method}", _wrap_client_collections
            )
        # dask.compute is dask.base.compute, imported into dask's namespace: both names.
        wrapt.wrap_function_wrapper("dask.base", "compute", _wrap_dask_compute)
        wrapt.wrap_function_wrapper("dask", "compute", _wrap_dask_compute)

    def _uninstrument(self, **kwargs: Any) -> None:
        import dask
        import dask.base
        from distributed.client import Client

        for method in ("submit", "map", "compute", "persist"):
            unwrap(Client, method)
        unwrap(dask.base, "compute")
        unwrap(dask, "compute")
        # _registered is kept: the plugin stays on the workers (their settings stay the
        # client's), and instrumenting again must not cost another round trip.
