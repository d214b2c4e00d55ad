"""Metrics, span events and the library's own logging, in one place.

Hop accounting is on every receiving hop, so it must cost next to nothing: each thread counts
in a table of its own (no lock, no attribute hashing), and an observable counter adds the
tables up at collection time, instead of a synchronous ``Counter.add`` on the request path.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.util.types import Attributes

from otel_identity import _counts, names
from otel_identity._counts import Counts
from otel_identity._errors import ConfigurationError
from otel_identity.version import __version__

logger = logging.getLogger("otel_identity")

_RESOLVE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_lock = threading.Lock()
_instruments: Any = None  # (hops, resolve duration, egress strips, resolve failures), at first use


def hop_key(hop: str, outcome: str, reason: str | None = None) -> tuple[str, ...]:
    """What the hop counter counts a hop under: rejected hops also by their reason."""
    if outcome == names.OUTCOME_REJECTED:
        return (hop, outcome, reason or names.REASON_MALFORMED)
    return (hop, outcome)


def hop_counts() -> Counts:
    """The running hop totals by ``(hop, outcome)`` (doctor, tests)."""
    folded: Counts = {}
    for key, count in hop_totals().items():
        folded[key[:2]] = folded.get(key[:2], 0) + count
    return folded


def hop_totals() -> Counts:
    """The running hop totals by ``hop_key`` (for the counter)."""
    return _counts.totals()


def _observe_hops(_options: CallbackOptions) -> Iterable[Observation]:
    return [Observation(count, _hop_attributes(key)) for key, count in hop_totals().items()]


def _hop_attributes(key: tuple[str, ...]) -> dict[str, str]:
    attributes = {names.ATTR_HOP: key[0], names.ATTR_OUTCOME: key[1]}
    if len(key) > 2:
        attributes[names.ATTR_REJECT_REASON] = key[2]
    return attributes


def _observe_stripped(_options: CallbackOptions) -> Iterable[Observation]:
    with _lock:
        stripped = list(_stripped.items())
    return [Observation(count, {names.ATTR_HOP: hop}) for hop, count in stripped]


def _observe_failures(_options: CallbackOptions) -> Iterable[Observation]:
    with _lock:
        failures = list(_failures.items())
    return [Observation(count, {names.ATTR_EXCEPTION_TYPE: kind}) for kind, count in failures]


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
                    # The SDK's default buckets are for milliseconds (5 to 10000): in seconds
                    # every lookup would land in the first one and the quantiles say nothing.
                    explicit_bucket_boundaries_advisory=_RESOLVE_BUCKETS,
                )
                # Rare events (an egress strip, a failing resolver): a locked dict is cheap
                # enough, and observed like the hops so the three counters read alike.
                stripped = meter.create_observable_counter(
                    names.METRIC_EGRESS_STRIPPED,
                    callbacks=[_observe_stripped],
                    unit="{hop}",
                    description="Outgoing hops whose identity egress removed.",
                )
                failures = meter.create_observable_counter(
                    names.METRIC_RESOLVE_FAILURES,
                    callbacks=[_observe_failures],
                    unit="{failure}",
                    description="User resolver calls that raised or timed out.",
                )
                _instruments = (counter, histogram, stripped, failures)
    return _instruments


_stripped: dict[str, int] = {}  # identity.hop -> egress strips
_failures: dict[str, int] = {}  # exception.type -> resolver failures


def count_stripped(hop: str) -> None:
    """Account one outgoing hop whose identity egress removed (whether or not a span records)."""
    _ensure_instruments()
    with _lock:
        _stripped[hop] = _stripped.get(hop, 0) + 1


def count_resolve_failure(exception_type: str) -> None:
    """Account one resolver call that raised or timed out."""
    _ensure_instruments()
    with _lock:
        _failures[exception_type] = _failures.get(exception_type, 0) + 1


def record_stripped(span: trace.Span | None, hop: str, address: str) -> None:
    """One egress strip of identity bound for ``address`` (``server.address``): counted
    always, and an ``identity.stripped`` event if ``span`` records."""
    count_stripped(hop)
    add_event(span, names.EVENT_STRIPPED, {names.ATTR_HOP: hop, names.ATTR_SERVER_ADDRESS: address})


def stripped_counts() -> dict[str, int]:
    with _lock:
        return dict(_stripped)


def resolve_failure_counts() -> dict[str, int]:
    with _lock:
        return dict(_failures)


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


# kind -> (monotonic time of its last line, lines suppressed since)
_limited: dict[str, tuple[float, int]] = {}
LOG_INTERVAL = 60.0


def log_limited(kind: str, message: str, *args: object, level: int = logging.WARNING) -> bool:
    """Log at most one line per ``kind`` per minute; True when this call logged.

    For lines that inbound input drives (a flood of hostile headers must not flood the log):
    ``args`` built from such input go through ``short``. A line after a quiet spell says how
    many were suppressed.
    """
    now = time.monotonic()
    last = _limited.get(kind)
    if last is not None and now - last[0] < LOG_INTERVAL:
        with _lock:  # a lost count under a race would only make the figure low
            last = _limited.get(kind, last)
            _limited[kind] = (last[0], last[1] + 1)
        return False
    with _lock:
        last = _limited.get(kind)
        if last is not None and now - last[0] < LOG_INTERVAL:
            return False
        _limited[kind] = (now, 0)
    if last is not None and last[1]:
        message += " (%d similar lines suppressed)"
        args = (*args, last[1])
    logger.log(level, message, *args)
    return True


def reset_log_limits() -> None:
    """Forget which kinds logged recently (tests: each sees its own first line)."""
    with _lock:
        _limited.clear()
        _logged_once.clear()


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
    """A short, printable prefix of untrusted input, safe to put in a log line: ``repr``
    escapes every control and non-printable character, so no raw CR, LF, ESC or NUL."""
    text = text if isinstance(text, str) else str(text)
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


_counts.on_new_table.append(_ensure_instruments)
