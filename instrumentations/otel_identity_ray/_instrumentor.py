"""Caller side of the Ray hop: the per-call hooks of ``_internals`` and the job's environment.

``ray.init`` is wrapped so the job's ``runtime_env`` carries the caller's ``OTEL_IDENTITY_*``
variables (``env_vars``, merged under the caller's own): every worker Ray starts for the job,
on any node, reads the same resolver, keys and policy at first use. Plain ``ray`` applies
``env_vars`` itself; no runtime-environment agent (``ray[default]``) is needed.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

import wrapt
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, unwrap

from otel_identity.instrumentation import identity_environment
from otel_identity_ray import _internals
from otel_identity_ray.package import _instruments

_log = logging.getLogger("otel_identity")


def with_identity_environment(runtime_env: Any) -> Any:
    """``runtime_env`` with the caller's ``OTEL_IDENTITY_*`` added to its ``env_vars``
    (values the caller set there explicitly win)."""
    environment = identity_environment()
    if not environment:
        return runtime_env
    base = dict(runtime_env or {})
    base["env_vars"] = {**environment, **dict(base.get("env_vars") or {})}
    return base


def _wrap_init(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    if is_instrumentation_enabled():
        try:
            kwargs = {**kwargs, "runtime_env": with_identity_environment(kwargs.get("runtime_env"))}
        except Exception:  # noqa: BLE001 - ray.init goes on with the caller's own arguments
            _log.exception("otel-identity: internal error in the Ray init hook")
    return wrapped(*args, **kwargs)


class RayIdentityInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Carries identity into Ray remote functions and actor method calls, per call."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        absent = _internals.missing()
        if absent:
            _log.error(
                "otel-identity: this Ray lacks %s; Ray calls carry no identity", ", ".join(absent)
            )
            return
        for (module, path), hook in zip(_internals.TARGETS, _internals.HOOKS, strict=True):
            wrapt.wrap_function_wrapper(module, path, hook)
        wrapt.wrap_function_wrapper("ray", "init", _wrap_init)

    def _uninstrument(self, **kwargs: Any) -> None:
        import ray
        import ray.actor
        import ray.remote_function

        for target, name in (
            (ray.remote_function.RemoteFunction, "_remote"),
            (ray.actor, "_modify_class"),
            (ray.actor.ActorHandle, "_actor_method_call"),
            (ray, "init"),
        ):
            if hasattr(getattr(target, name, None), "__wrapped__"):
                unwrap(target, name)
