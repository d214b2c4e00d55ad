"""What the core keeps for each thread: the hand-off it is running.

    from otel_identity._thread_state import here

    here().handoff                     # the hand-off this thread is running, or None

A thread's ``ThreadState`` is made on its first use and registered nowhere: a server that
starts a thread per connection makes one small object per thread that asks, and it goes
with the thread.
"""

from __future__ import annotations

import threading
from typing import Any


class ThreadState:
    """What the core keeps for one thread, written by that thread only: the hand-off
    (``_handoff.Handoff``) it is running, and its ident."""

    __slots__ = ("handoff", "ident")

    def __init__(self) -> None:
        self.handoff: Any = None
        self.ident = threading.get_ident()


_local = threading.local()  # .state: this thread's ThreadState


def here() -> ThreadState:
    """This thread's ThreadState (made on its first use)."""
    try:
        return _local.state  # type: ignore[no-any-return]
    except AttributeError:  # this thread's first call (a missing attribute is slow every time)
        _local.state = state = ThreadState()
        return state


def current_handoff() -> Any:
    """The hand-off this thread is running, if any."""
    return here().handoff
