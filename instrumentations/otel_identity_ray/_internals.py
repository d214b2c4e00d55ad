"""The Ray internals this instrumentation relies on, all of them, in one place.

Ray has no public per-call hook: its own tracing adds a keyword argument to every task and
actor call through the same private entry points (``ray.util.tracing.tracing_helper``), and
so does this module, for the identity carrier:

* ``RemoteFunction._remote`` (behind ``f.remote()`` and ``f.options(...).remote()``): before
  the function is first exported, its ``_function`` becomes the identity wrapper; then every
  call gets the carrier. A function already called before ``instrument()`` keeps its exported
  signature and is left alone (its calls carry no identity).
* ``ray.actor._modify_class`` (what ``@ray.remote`` on a class calls): the class Ray derives
  from the user's gets wrapped methods, before Ray reads their signatures.
* ``ActorHandle._actor_method_call`` (behind ``handle.method.remote()``): adds the carrier
  when the method's recorded signature has the parameter (that is, the class was wrapped).

``missing()`` names whichever of these an upgrade removed; ``instrument()`` then leaves Ray
untouched (identity only by the explicit ``_otel_identity=`` keyword of wrapped functions)
and logs once, and tests/otel_identity_ray checks it fails loudly.
"""

from __future__ import annotations

import inspect
import logging
import types
from typing import Any

from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from otel_identity_ray._task import PARAM, carrier_of_current, identity_function

_log = logging.getLogger("otel_identity")
_logged: set[str] = set()


def _log_once(where: str) -> None:
    if where not in _logged:
        _logged.add(where)
        _log.exception("otel-identity: internal error in the Ray %s hook", where)


def _carrier(where: str) -> str:
    """The caller's carrier; on an internal error an empty one (the call runs as a hop
    without identity: fail closed, never the caller's failure)."""
    try:
        return carrier_of_current()
    except Exception:  # noqa: BLE001
        _log_once(where)
        return "{}"


# (module, attribute path) of each internal used.
TARGETS = (
    ("ray.remote_function", "RemoteFunction._remote"),
    ("ray.actor", "_modify_class"),
    ("ray.actor", "ActorHandle._actor_method_call"),
)


def missing() -> list[str]:
    """The internals that this Ray lacks (empty when all are there)."""
    import importlib

    absent = []
    for module_name, path in TARGETS:
        try:
            target: Any = importlib.import_module(module_name)
            for part in path.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError):
            absent.append(f"{module_name}.{path}")
            continue
        if not callable(target):
            absent.append(f"{module_name}.{path}")
    return absent


def _call_kwargs(args: tuple[Any, ...], kwargs: dict[str, Any], index: int) -> dict[str, Any]:
    """A copy of the call's ``kwargs`` argument (keyword or positional at ``index``)."""
    if "kwargs" in kwargs:
        return dict(kwargs["kwargs"] or {})
    return dict((args[index] if len(args) > index else None) or {})


def _with_call_kwargs(
    args: tuple[Any, ...], kwargs: dict[str, Any], index: int, call_kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if "kwargs" in kwargs or len(args) <= index:
        return args, {**kwargs, "kwargs": call_kwargs}
    return (*args[:index], call_kwargs, *args[index + 1 :]), kwargs


def prepare_function(remote_function: Any) -> bool:
    """Give ``remote_function`` the identity wrapper if it was not exported yet; whether its
    calls can carry identity."""
    with remote_function._inject_lock:
        fn = remote_function._function
        if remote_function._function_signature is None:
            wrapped = identity_function(fn)
            if wrapped is not None:
                remote_function._function = fn = wrapped
        signature = remote_function._function_signature
    if signature is not None:
        return any(p.name == PARAM for p in signature)
    return PARAM in inspect.signature(fn).parameters


def wrap_remote(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """``RemoteFunction._remote(args, kwargs, ...)``: carry the caller's identity."""
    if not is_instrumentation_enabled() or getattr(instance, "_is_cross_language", False):
        return wrapped(*args, **kwargs)
    try:
        carries = prepare_function(instance)
    except Exception:  # noqa: BLE001 - the call goes on as Ray would make it
        _log_once("remote function")
        carries = False
    if not carries:
        return wrapped(*args, **kwargs)
    return _call_carrying(wrapped, args, kwargs, 1, "remote function")


def _methods(cls: type) -> dict[str, types.FunctionType]:
    """The plain (instance) methods a class defines or inherits, nearest definition first."""
    found: dict[str, types.FunctionType] = {}
    for klass in cls.__mro__:
        if klass is object:
            continue
        for name, value in vars(klass).items():
            # dunders are Ray's own (__ray_terminate__) or construction, never a caller's call
            if name not in found and not name.startswith("__"):
                found[name] = value
    return {n: v for n, v in found.items() if isinstance(v, types.FunctionType)}


def wrap_modify_class(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """``ray.actor._modify_class(cls)``: the derived class gets identity-carrying methods."""
    derived = wrapped(*args, **kwargs)
    if not is_instrumentation_enabled():
        return derived
    try:
        for name, method in _methods(derived).items():
            replacement = identity_function(method)
            if replacement is not None and replacement is not method:
                setattr(derived, name, replacement)
    except Exception:  # noqa: BLE001 - methods left unwrapped carry no identity, as before
        _log_once("actor class")
    return derived


def wrap_actor_method_call(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """``ActorHandle._actor_method_call(method_name, args, kwargs, ...)``: per call."""
    if not is_instrumentation_enabled() or getattr(instance, "_ray_is_cross_language", False):
        return wrapped(*args, **kwargs)
    try:
        method_name = kwargs.get("method_name", args[0] if args else None)
        signature = instance._ray_method_signatures.get(method_name)
        carries = bool(signature) and any(p.name == PARAM for p in signature)
    except Exception:  # noqa: BLE001
        _log_once("actor method")
        carries = False
    if not carries:
        return wrapped(*args, **kwargs)
    return _call_carrying(wrapped, args, kwargs, 2, "actor method")


def _call_carrying(wrapped: Any, args: Any, kwargs: Any, position: int, what: str) -> Any:
    """Call ``wrapped`` with the caller's carrier added to the keyword arguments of the call
    it makes (its argument at ``position``, or keyword ``kwargs``)."""
    call_kwargs = _call_kwargs(args, kwargs, position)
    call_kwargs[PARAM] = _carrier(what)
    args, kwargs = _with_call_kwargs(args, kwargs, position, call_kwargs)
    return wrapped(*args, **kwargs)


HOOKS = (wrap_remote, wrap_modify_class, wrap_actor_method_call)
