"""What the core keeps for each thread: its hop counts and the hand-off it is running.

    from otel_identity._thread_state import count, here

    count(("thread", "present"))       # one hop, in this thread's own table
    here().handoff                     # the hand-off this thread is running, if any

Each thread writes only its own ``ThreadState``, so counting a hop takes no lock; the
telemetry module adds the tables up at collection time (``tables``).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

# (hop, outcome), or (hop, outcome, reason) for a rejected hop: see ``_telemetry.hop_key``.
Counts = dict[tuple[str, ...], int]


class ThreadState:
    """What the core keeps for one thread, written by that thread only: its hop counts, and
    the hand-off (``_handoff.Handoff``) it is running."""

    __slots__ = ("counts", "handoff", "ident")

    def __init__(self) -> None:
        self.counts: Counts = {}
        self.handoff: Any = None
        self.ident = threading.get_ident()


_local = threading.local()  # .state: this thread's ThreadState
lock = threading.Lock()
# Every thread's own table, with a weak reference to its thread; the telemetry module folds
# the tables of threads that have ended away at collection, so thread churn does not grow memory.
tables: list[tuple[weakref.ref[threading.Thread], Counts]] = []
# Called once per thread, before its first table is made (the telemetry module makes its
# instruments there, so a counter exists as soon as anything is counted).
on_first_use: list[Callable[[], object]] = []


def here() -> ThreadState:
    """This thread's ThreadState (made on its first use)."""
    try:
        return _local.state  # type: ignore[no-any-return]
    except AttributeError:  # this thread's first call (a missing attribute is slow every time)
        return _new_state()


def _new_state() -> ThreadState:
    for hook in on_first_use:
        hook()
    state = ThreadState()
    _local.state = state
    with lock:
        tables.append((weakref.ref(threading.current_thread()), state.counts))
    return state


def count(key: tuple[str, ...]) -> None:
    """Account one hop under its ``hop_key`` in this thread's table."""
    counts = here().counts
    counts[key] = counts.get(key, 0) + 1


def current_handoff() -> Any:
    """The hand-off this thread is running, if any."""
    return here().handoff
