"""The hop counts of the process: how many receiving hops, by ``_telemetry.hop_key``.

    from otel_identity._counts import count, totals

    count(("thread", "present"))       # one hop
    totals()                           # {("thread", "present"): 1, ...}

Each thread counts in the table of its ident (``threading.get_ident``), which only that
thread writes while it lives: counting takes no lock and makes nothing per thread. The
system hands the ident of an ended thread to a new one, which continues that table's sums;
so a server that starts a thread per connection keeps about as many tables as it ever ran
threads at once. Should the tables still double, those of idents no live thread holds are
folded into one (``_fold_ended``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

# (hop, outcome), or (hop, outcome, reason) for a rejected hop: see ``_telemetry.hop_key``.
Counts = dict[tuple[str, ...], int]

_tables: dict[int, Counts] = {}  # thread ident -> that thread's counts
_retired: Counts = {}  # the counts of folded tables
_lock = threading.Lock()  # guards folding (and _retired), never counting
_FOLD_AT_LEAST = 64
_fold_at = _FOLD_AT_LEAST
# Called when a thread ident counts for the first time (the telemetry module makes its
# instruments there, so a counter exists as soon as anything is counted).
on_new_table: list[Callable[[], object]] = []


def count(key: tuple[str, ...]) -> None:
    """Account one hop under ``key``, in this thread's table."""
    counts = _tables.get(threading.get_ident())
    if counts is None:
        counts = _new_table()
    counts[key] = counts.get(key, 0) + 1


def _new_table() -> Counts:
    """This thread's table, for an ident that has none yet."""
    for hook in on_new_table:
        hook()
    counts: Counts = {}
    with _lock:
        if len(_tables) >= _fold_at:
            _fold_ended()
        _tables[threading.get_ident()] = counts
    return counts


def _fold_ended() -> None:
    """Fold the tables of idents no live thread holds into ``_retired`` (the caller holds
    ``_lock``); the next fold waits until the tables have doubled again. (A thread that
    Python never registered, one a C library started, is not in ``threading.enumerate``: its
    table may be folded while it lives, and its next count starts a new one.)"""
    global _fold_at
    live = {thread.ident for thread in threading.enumerate()}
    for ident in [ident for ident in _tables if ident not in live]:
        for key, number in _tables.pop(ident).items():
            _retired[key] = _retired.get(key, 0) + number
    _fold_at = max(_FOLD_AT_LEAST, 2 * len(_tables))


def totals() -> Counts:
    """The running totals, by key, every thread's added up."""
    with _lock:
        total = dict(_retired)
        tables = list(_tables.values())
    for counts in tables:
        for key, number in counts.copy().items():  # (a copy is one step: its thread may count)
            total[key] = total.get(key, 0) + number
    return total
