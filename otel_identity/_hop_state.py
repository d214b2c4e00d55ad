"""What happened on one receiving hop: its outcome, its counter key and its pending events.

    from otel_identity._hop_state import quiet_state

    state = quiet_state("thread", "present")   # shared by every such hop without events
    state.key                                   # ("thread", "present"): what the counter counts

A hop's events (``identity.missing``, ``identity.rejected``) wait in its state until a span can
take them; the span processor hands them to the first span started under the hop.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace

from otel_identity import _config, _telemetry, names


class HopState:
    """What happened on one receiving hop; events wait here until a span can take them."""

    __slots__ = ("hop", "key", "outcome", "pending", "reason")

    def __init__(self, hop: str, outcome: str, reason: str | None = None) -> None:
        self.hop = hop
        self.outcome = outcome
        self.key = _telemetry.hop_key(hop, outcome, reason)  # what the hop counter counts
        self.reason = reason
        self.pending: list[tuple[str, dict[str, Any]]] = []

    def flush(self, span: trace.Span) -> None:
        """Put pending events on ``span`` (the hop's first span); each goes to one span only."""
        while self.pending:
            try:
                name, attributes = self.pending.pop(0)
            except IndexError:  # another thread flushed concurrently
                return
            _telemetry.add_event(span, name, attributes)


# Shared states by outcome, then hop kind: every outcome a hop without events can have.
_quiet: dict[str, dict[str, HopState]] = {
    names.OUTCOME_PRESENT: {},
    names.OUTCOME_MISSING: {},
    names.OUTCOME_ANONYMOUS: {},
}


def quiet_state(hop: str, outcome: str) -> HopState:
    """The shared state of ``hop`` hops with ``outcome`` and no events to deliver. It is never
    mutated: pending events only ever go into a hop's own new state."""
    states = _quiet.setdefault(outcome, {})
    state = states.get(hop)
    if state is None:
        state = states.setdefault(hop, HopState(hop, outcome))
    return state


def missing_event(hop: str, settings: _config.Settings) -> tuple[str, dict[str, Any]]:
    """The ``identity.missing`` event of a ``hop`` hop, naming the keys it lacks."""
    return (
        names.EVENT_MISSING,
        {names.ATTR_HOP: hop, names.ATTR_MISSING_KEYS: (settings.user_key, settings.tenant_key)},
    )


def missing_state(hop: str) -> HopState:
    """The state of a hop that arrived without identity (not counted yet), with
    ``identity.missing`` pending where the hop kind is required."""
    settings = _config.get_settings()
    if hop not in settings.required_hops:
        return quiet_state(hop, names.OUTCOME_MISSING)
    state = HopState(hop, names.OUTCOME_MISSING)
    state.pending.append(missing_event(hop, settings))
    return state
