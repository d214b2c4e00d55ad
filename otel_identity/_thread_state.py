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
lock = threading.Lock()  # guards ``tables`` and ``retired``
# Every live thread's own table, with a weak reference to its thread, and the counts of the
# threads that have ended, folded together (``fold_ended``): a server that starts a thread per
# connection keeps a bounded number of tables, whether or not any metric is ever collected.
tables: list[tuple[weakref.ref[threading.Thread], Counts]] = []
retired: Counts = {}
_FOLD_AT_LEAST = 64
_fold_at = _FOLD_AT_LEAST  # the number of tables at which a new thread folds the ended ones
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
        if len(tables) >= _fold_at:
            fold_ended()
        tables.append((weakref.ref(threading.current_thread()), state.counts))
    return state


def fold_ended() -> None:
    """Fold the tables of threads that have ended into ``retired`` (the caller holds ``lock``).
    A new thread does it once the tables have doubled since the last fold: amortized, a few
    steps per thread."""
    global _fold_at
    live = []
    for ref, table in tables:
        thread = ref()
        if thread is None or not thread.is_alive():
            for key, count in table.items():
                retired[key] = retired.get(key, 0) + count
        else:
            live.append((ref, table))
    tables[:] = live
    _fold_at = max(_FOLD_AT_LEAST, 2 * len(live))


def count(key: tuple[str, ...]) -> None:
    """Account one hop under its ``hop_key`` in this thread's table."""
    counts = here().counts
    counts[key] = counts.get(key, 0) + 1


def current_handoff() -> Any:
    """The hand-off this thread is running, if any."""
    return here().handoff
