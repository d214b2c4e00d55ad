"""The hop counts of the process: how many receiving hops, by ``_telemetry.hop_key``.

    from otel_identity._counts import count, totals

    count(("thread", "present"))       # one hop
    totals()                           # {("thread", "present"): 1, ...}

One table and one lock for every thread: counting is a dictionary update under an
uncontended lock, and a thread that counts owns nothing that outlives it (a server that
starts a thread per connection keeps no per-thread table to fold or to leak).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

# (hop, outcome), or (hop, outcome, reason) for a rejected hop: see ``_telemetry.hop_key``.
Counts = dict[tuple[str, ...], int]

_lock = threading.Lock()
_table: Counts = {}
# Called when a key is counted for the first time (the telemetry module makes its
# instruments there, so a counter exists as soon as anything is counted).
on_new_key: list[Callable[[], object]] = []


def count(key: tuple[str, ...]) -> None:
    """Account one hop under ``key``."""
    with _lock:
        total = _table.get(key, 0) + 1
        _table[key] = total
    if total == 1:
        for hook in on_new_key:
            hook()


def totals() -> Counts:
    """The running totals, by key (a copy)."""
    with _lock:
        return dict(_table)
