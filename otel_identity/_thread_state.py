"""What the core keeps for each thread: the hand-off it is running.

    from otel_identity._thread_state import running

    running.handoff                    # the hand-off this thread is running, or None

A thread that never ran a hand-off reads the class default: nothing is made for a thread
until a hand-off runs in it, so a server that starts a thread per connection pays nothing.
"""

from __future__ import annotations

import threading
from typing import Any


class Running(threading.local):
    """Per thread, the hand-off (``_handoff.Handoff``) it is running; written by that thread
    only, and read as None where none ever ran."""

    handoff: Any = None


running = Running()


def current_handoff() -> Any:
    """The hand-off this thread is running, if any."""
    return running.handoff
