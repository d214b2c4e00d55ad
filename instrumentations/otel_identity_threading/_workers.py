"""The loops that long-lived pool threads and processes run.

A pool's worker is not a hop of whichever task happened to start it: it serves many tasks
(each attached on its own, where the pool lets us) and must not hold the first caller's
identity for the rest of its life. Left alone it would: ``Thread.start`` captures the caller's
context, ``multiprocessing.pool.ThreadPool`` runs every task on its worker's own context, and
on Python 3.14 ``sys.flags.thread_inherit_context`` copies the caller's context into the thread.
These loops run on an empty context instead, and count no hop. (Resolved when instrumenting,
so that no import happens inside ``Thread.start``.)
"""

from __future__ import annotations

import functools


@functools.cache
def worker_loops() -> frozenset[object]:
    import logging.handlers
    from concurrent.futures import process as futures_process
    from concurrent.futures import thread as futures_thread
    from multiprocessing import managers, pool, queues

    candidates = [
        getattr(futures_thread, "_worker", None),
        getattr(futures_process, "_process_worker", None),
        getattr(pool, "worker", None),
        *(vars(pool.Pool).get(n) for n in ("_handle_workers", "_handle_tasks", "_handle_results")),
        vars(queues.Queue).get("_feed"),
        vars(managers.BaseManager).get("_run_server"),  # a manager's server process
        vars(logging.handlers.QueueListener).get("_monitor"),
        # A Thread subclass that is a pool's own machinery (it overrides run; no target).
        getattr(futures_process, "_ExecutorManagerThread", None),
    ]
    return frozenset(getattr(c, "__func__", c) for c in candidates if c is not None)


def is_worker_loop(target: object, cls: type | None = None) -> bool:
    """Whether ``target`` (or, for a Thread subclass, its class) is a pool's own loop."""
    loops = worker_loops()
    if cls is not None and cls in loops:
        return True
    if target is None:
        return False
    try:
        return getattr(target, "__func__", target) in loops
    except TypeError:  # an unhashable callable is nobody's worker loop
        return False
