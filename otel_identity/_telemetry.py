"""Metrics, span events and the library's own logging, in one place.

Hop accounting is on every receiving hop, so it must cost next to nothing: each thread counts
in a table of its own (no lock, no attribute hashing), and an observable counter adds the
tables up at collection time, instead of a synchronous ``Counter.add`` on the request path.
"""

from __future__ import annotations

import logging
import sys
import threading
import weakref
from collections.abc import Iterable
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.util.types import Attributes

from otel_identity import names
from otel_identity._errors import ConfigurationError
from otel_identity.version import __version__

logger = logging.getLogger("otel_identity")

_lock = threading.Lock()
_instruments: Any = None  # (observable counter, histogram), created at first use

Counts = dict[tuple[str, str], int]


class ThreadState:
    """What the core keeps for each thread, written by that thread only: its hop counts, and
    the hand-off (``_context.Handoff``) it is running."""

    __slots__ = ("counts", "handoff", "ident")

    def __init__(self) -> None:
        self.counts: Counts = {}
        self.handoff: Any = None
        self.ident = threading.get_ident()


local = threading.local()  # .state: this thread's ThreadState
# Every thread's own table, with a weak reference to its thread; the tables of threads that
# have ended are folded into _retired at collection, so thread churn does not grow memory.
_tables: list[tuple[weakref.ref[threading.Thread], Counts]] = []
_retired: Counts = {}


def thread_state() -> ThreadState:
    """This thread's ThreadState (made on first use)."""
    try:
        return local.state  # type: ignore[no-any-return]
    except AttributeError:
        pass
    _ensure_instruments()
    state = ThreadState()
    local.state = state
    with _lock:
        _tables.append((weakref.ref(threading.current_thread()), state.counts))
    return state


def hop_counts() -> Counts:
    """The running hop totals, all threads added up (for the counter, doctor and tests)."""
    with _lock:
        live: list[tuple[weakref.ref[threading.Thread], Counts]] = []
        total = dict(_retired)
        for ref, table in _tables:
            snapshot = table.copy()  # only its own thread writes it; a copy is one C call
            for key, count in snapshot.items():
                total[key] = total.get(key, 0) + count
            thread = ref()
            if thread is None or not thread.is_alive():
                for key, count in snapshot.items():
                    _retired[key] = _retired.get(key, 0) + count
            else:
                live.append((ref, table))
        _tables[:] = live
    return total


def _observe_hops(_options: CallbackOptions) -> Iterable[Observation]:
    return [
        Observation(count, {names.ATTR_HOP: hop, names.ATTR_OUTCOME: outcome})
        for (hop, outcome), count in hop_counts().items()
    ]


def _ensure_instruments() -> Any:
    global _instruments
    if _instruments is None:
        with _lock:
            if _instruments is None:
                meter = metrics.get_meter("otel_identity", __version__)
                counter = meter.create_observable_counter(
                    names.METRIC_HOPS,
                    callbacks=[_observe_hops],
                    unit="{hop}",
                    description="Receiving hops by identity outcome.",
                )
                histogram = meter.create_histogram(
                    names.METRIC_RESOLVE_DURATION,
                    unit="s",
                    description="Time the user resolver took, cache misses only.",
                )
                _instruments = (counter, histogram)
    return _instruments


def count(key: tuple[str, str]) -> None:
    """Account one ``(hop, outcome)``; the observable counter reports the running totals."""
    try:
        table: Counts = local.state.counts
    except AttributeError:
        table = thread_state().counts
    table[key] = table.get(key, 0) + 1


def record_resolve_duration(seconds: float, hop: str | None) -> None:
    _ensure_instruments()[1].record(seconds, {names.ATTR_HOP: hop or names.HOP_MANUAL})


def add_event(span: trace.Span | None, name: str, attributes: Attributes) -> bool:
    """Add an event to a recording span; False when there is none to record on."""
    if span is None or not span.is_recording():
        return False
    try:
        span.add_event(name, attributes)
    except Exception:  # noqa: BLE001 - a broken span implementation must not break the hop
        log_internal_error("add_event")
        return False
    return True


def has_event(span: trace.Span, name: str) -> bool:
    events = getattr(span, "events", ())
    return any(getattr(event, "name", None) == name for event in events)


_logged_once: set[tuple[str, ...]] = set()


def log_once(level: int, key: tuple[str, ...], message: str, *args: object) -> None:
    """Log a message the first time ``key`` is seen: bad input repeats, the log must not."""
    if key in _logged_once:
        return
    with _lock:
        if key in _logged_once:
            return
        _logged_once.add(key)
    logger.log(level, message, *args)


def log_internal_error(where: str) -> None:
    """The library's own failure on the request path: logged (with traceback), never raised.

    Tests turn every call of this into a failure (see ``tests/conftest.py``). An invalid
    configuration is no internal error: it is said once, in one line, and the caller has
    failed closed (nothing sent, nothing accepted).
    """
    handled = sys.exc_info()[1]
    if isinstance(handled, ConfigurationError):
        log_configuration_error(handled)
        return
    # Always called from an except block: the traceback is the one being handled.
    logger.exception("otel-identity internal error in %s (ignored)", where)  # noqa: LOG004


def log_configuration_error(error: ConfigurationError) -> None:
    """One line, once per distinct error, for a setting a running app cannot use."""
    log_once(
        logging.ERROR,
        ("configuration", str(error)),
        "otel-identity: invalid configuration: %s. Identity is off until it is fixed: "
        "nothing is sent, nothing is accepted (run 'otel-identity doctor')",
        error,
    )


def short(text: object, limit: int = 32) -> str:
    """A short, printable prefix of untrusted input, safe to put in a log line."""
    value = repr(str(text)[:limit])
    return value + ("..." if len(str(text)) > limit else "")
