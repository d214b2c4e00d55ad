"""``ThreadingIdentityInstrumentor``: every in-process and process hop carries identity."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)

from otel_identity import instrumentation as oii
from otel_identity_threading import _patching, _pool, _processes, _threads, _workers
from otel_identity_threading.package import _instruments

_TARGETS = _threads.TARGETS + _processes.TARGETS


class ThreadingIdentityInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Threads, Timers, thread and process pools, ``run_in_executor`` and processes.

    Coexists with ``opentelemetry-instrumentation-threading`` in either load order and either
    uninstrument order: our wrappers always sit beneath its own (see ``_patching``).
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        _workers.worker_loops()
        for owner, name, wrapper in _TARGETS:
            _patching.wrap_beneath(owner, name, wrapper)
        _pool.install()

    def _uninstrument(self, **kwargs: Any) -> None:
        _pool.uninstall()
        for owner, name, wrapper in _TARGETS:
            if not _patching.unwrap_ours(owner, name, wrapper):
                oii.log_once(
                    30,  # logging.WARNING
                    ("threading.unwrap", owner.__qualname__, name),
                    "otel-identity: could not remove the wrapper of %s.%s (patched over by "
                    "something else?)",
                    owner.__qualname__,
                    name,
                )
