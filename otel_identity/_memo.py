"""Bounded memo tables for the hot path.

Identity repeats (the same user, tenant and header across the requests of a session), so
several pure steps are memoized. A table is cleared when full: a flood of distinct values
(an attacker's, say) costs a miss each, never unbounded memory, and clearing is cheaper and
simpler than LRU bookkeeping on every hit.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import TypeVar

LIMIT = 4096
_lock = threading.Lock()

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def remember(table: dict[K, V], key: K, value: V, limit: int = LIMIT) -> V:
    """Store ``value`` under ``key``, clearing the table first when it is full."""
    with _lock:
        if len(table) >= limit:
            table.clear()
        table[key] = value
    return value
