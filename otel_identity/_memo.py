"""Bounded memo tables for the hot path.

Identity repeats (the same user, tenant and header across the requests of a session), so
several pure steps are memoized. A table is cleared when full: a flood of distinct values
(an attacker's, say) costs a miss each, never unbounded memory, and clearing is cheaper and
simpler than LRU bookkeeping on every hit. A value derived from the settings alone is
remembered with ``per_settings``.

    from otel_identity import _memo

    _memo.remember(table, key, value)        # bounded: cleared when full

    @_memo.per_settings
    def keep(settings): ...                  # recomputed when the settings object changes
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

LIMIT = 4096
_lock = threading.Lock()

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
S = TypeVar("S")


def remember(table: dict[K, V], key: K, value: V, limit: int = LIMIT) -> V:
    """Store ``value`` under ``key``, clearing the table first when it is full."""
    with _lock:
        if len(table) >= limit:
            table.clear()
        table[key] = value
    return value


def per_settings(compute: Callable[[S], V]) -> Callable[[S], V]:
    """``compute(settings)``, remembered for the settings object last asked about.

    Settings are replaced, never changed, when they change (``configure``, ``reset_settings``),
    so a new settings object is the invalidation: nothing needs to listen for changes.
    """
    last: tuple[object, Any] = (None, None)

    def remembered(settings: S) -> V:
        nonlocal last
        known, value = last  # one read: another thread may replace the pair meanwhile
        if known is not settings:
            value = compute(settings)
            last = (settings, value)
        return value  # type: ignore[no-any-return]

    remembered.__doc__ = compute.__doc__
    return remembered
