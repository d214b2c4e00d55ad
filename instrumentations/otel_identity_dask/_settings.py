"""Workers get the caller's settings: a ``WorkerPlugin`` carrying its ``OTEL_IDENTITY_*``.

    await client.register_plugin(settings_plugin())   # what instrument() does for sync clients

Dask workers are not started under ``opentelemetry-instrument`` and may be long-lived, started
before the client set its environment. The plugin holds the client's ``OTEL_IDENTITY_*``
variables; on each worker process (present and future) it makes them the worker's environment
and applies them through ``oi.configure`` and ``oi.set_user_resolver``, so a resolver, keys
and an inbound policy configured only in the client's environment hold in every task; and it
instruments the worker, so a task's own submissions carry the task's identity. Workers in the
client's own process are left alone: they share its settings already. The values
(signing keys included) travel through the scheduler, inside the cluster's own trust domain.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
from collections.abc import Mapping
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

import otel_identity as oi

PREFIX = "OTEL_IDENTITY_"
PLUGIN_NAME = "otel-identity-settings"
_log = logging.getLogger("otel_identity")


def identity_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``OTEL_IDENTITY_*`` variables of ``environ`` (the process environment by default)."""
    source = os.environ if environ is None else environ
    return {name: value for name, value in source.items() if name.startswith(PREFIX)}


def _load_resolver(spec: str) -> Any:
    module_name, _, attribute = spec.partition(":")
    target: Any = importlib.import_module(module_name.strip())
    for part in attribute.strip().split("."):
        target = getattr(target, part)
    return target


def apply_environment(environment: Mapping[str, str]) -> None:
    """Make ``environment`` this process's identity settings, replacing what it had.

    Raises ``oi.ConfigurationError`` (or the resolver's ImportError) on a bad setting, as the
    environment would at first use: the plugin's setup fails loudly in the worker's log."""
    for name in [n for n in os.environ if n.startswith(PREFIX) and n not in environment]:
        del os.environ[name]
    os.environ.update(environment)
    defaults = oi.Settings()
    values: dict[str, Any] = {}
    for field in dataclasses.fields(oi.Settings):
        raw = environment.get(PREFIX + field.name.upper(), "").strip()
        values[field.name] = raw or getattr(defaults, field.name)
    keys_file = environment.get(PREFIX + "SIGNING_KEYS_FILE")
    if keys_file and not environment.get(PREFIX + "SIGNING_KEYS", "").strip():
        with open(keys_file, encoding="utf-8") as handle:
            values["signing_keys"] = handle.read().strip()
    oi.configure(**values)
    if isinstance(values["resolver"], str):
        oi.set_user_resolver(_load_resolver(values["resolver"]))


class IdentitySettingsPlugin(WorkerPlugin):  # type: ignore[misc]
    """Applies a client's ``OTEL_IDENTITY_*`` settings on every worker, and instruments the
    worker process so that tasks submitting tasks (``worker_client()``) hand their own
    identity on."""

    name = PLUGIN_NAME

    def __init__(self, environment: Mapping[str, str]) -> None:
        self.environment = dict(environment)
        self.pid = os.getpid()  # the client's process

    def setup(self, worker: Any) -> None:
        if os.getpid() == self.pid:
            # A worker in the client's own process (processes=False) already has the client's
            # settings, including any made in code, which the environment must not undo.
            return
        apply_environment(self.environment)
        from otel_identity_dask import DaskIdentityInstrumentor

        instrumentor = DaskIdentityInstrumentor()
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()

    def __repr__(self) -> str:  # never the values: they may hold signing keys
        return f"IdentitySettingsPlugin({sorted(self.environment)})"


def settings_plugin() -> IdentitySettingsPlugin:
    """A plugin with this process's ``OTEL_IDENTITY_*`` settings, for ``register_plugin``."""
    return IdentitySettingsPlugin(identity_environment())


def log_setup_failure(exc: BaseException) -> None:
    _log.error(
        "otel-identity: could not apply identity settings on the Dask workers (%s); "
        "their tasks use the workers' own settings",
        type(exc).__name__,
    )
