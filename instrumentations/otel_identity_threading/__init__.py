"""Identity across threads, thread and process pools, ``run_in_executor`` and processes.

    from otel_identity_threading import ThreadingIdentityInstrumentor

    ThreadingIdentityInstrumentor().instrument()

    with oi.use_identity(user_id="u-42", tenant_id="acme"):
        pool.submit(branch)            # branch sees u-42/acme and resolves its own current_user

Identity is captured at hand-off (``Thread.start``, ``Executor.submit``), never taken from
whatever a reused worker holds: a task submitted without identity sees none. Each receiving
thread is a ``thread`` hop and each child process a ``process`` hop, counted in
``otel_identity.hops``, with ``current_user`` resolved afresh in the receiving thread or
process. Covers ``threading.Thread`` (subclasses that override ``run`` too),
``threading.Timer``, ``concurrent.futures.ThreadPoolExecutor.submit``/``map``,
``loop.run_in_executor`` (default and custom executors), ``asyncio.to_thread``,
``ProcessPoolExecutor.submit``/``map`` and ``multiprocessing.Process`` under spawn, forkserver
and fork. Pools' own worker loops run on an empty context and count no hop.

Coexists with ``opentelemetry-instrumentation-threading`` in either load order.
"""

from __future__ import annotations

from otel_identity_threading._instrumentor import ThreadingIdentityInstrumentor

__all__ = ["ThreadingIdentityInstrumentor"]
