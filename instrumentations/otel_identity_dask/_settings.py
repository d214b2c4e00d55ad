"""Workers get the caller's settings: a ``WorkerPlugin`` carrying its ``OTEL_IDENTITY_*``.

    await client.register_plugin(settings_plugin())   # what instrument() does for sync clients

Dask workers are not started under ``opentelemetry-instrument`` and may be long-lived, started
before the client set its environment. The plugin holds the client's ``OTEL_IDENTITY_*``
variables; on each worker process (present and future) it makes them the worker's environment
and has the core read its settings and resolver from them again
(``otel_identity.instrumentation.adopt_environment``), so a resolver, keys
and an inbound policy configured only in the client's environment hold in every task; and it
instruments the worker, so a task's own submissions carry the task's identity. Workers in the
client's own process are left alone: they share its settings already. The values
(signing keys included) travel through the scheduler, inside the cluster's own trust domain.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from otel_identity.instrumentation import adopt_environment

PLUGIN_NAME = "otel-identity-settings"
_log = logging.getLogger("otel_identity")


class IdentitySettingsPlugin(WorkerPlugin):  # type: ignore[misc]
    """Applies a client's ``OTEL_IDENTITY_*`` settings on every worker, and instruments the
    worker process so that tasks submitting tasks (``worker_client()``) hand their own
    identity on."""

    name = PLUGIN_NAME

    def __init__(
        self, environment: Mapping[str, str], instrument: Callable[[], None] | None = None
    ) -> None:
        self.environment = dict(environment)
        self.instrument = instrument  # instruments the worker (pickled by reference)
        self.pid = os.getpid()  # the client's process

    def setup(self, worker: Any) -> None:
        if os.getpid() == self.pid:
            # A worker in the client's own process (processes=False) already has the client's
            # settings, including any made in code, which the environment must not undo.
            return
        adopt_environment(self.environment)
        if self.instrument is not None:
            self.instrument()

    def __repr__(self) -> str:  # never the values: they may hold signing keys
        return f"IdentitySettingsPlugin({sorted(self.environment)})"


def log_setup_failure(exc: BaseException) -> None:
    _log.error(
        "otel-identity: could not apply identity settings on the Dask workers (%s); "
        "their tasks use the workers' own settings",
        type(exc).__name__,
    )
