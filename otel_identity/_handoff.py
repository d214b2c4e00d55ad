"""The in-process hand-off: a hop from one thread, task or executor of this process to another.

    from otel_identity._handoff import Handoff, enter, leave

    handoff = Handoff(captured)            # at hand-off, in the sender: the current context
    token = enter(handoff, "thread")       # in the receiver, before the work
    try:
        work()
    finally:
        leave(handoff, token)

``receive``/``continue_context`` make a captured context a hop of its own (a new Context);
``enter``/``leave`` do it for work that owns its thread while it runs, without copying the
context (``Handoff``). ``hop_of``/``user_slot`` read a context's hop and user slot, or those of
the hand-off it runs in.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from opentelemetry.context import Context

from otel_identity import _counts, _telemetry, _thread_state, names
from otel_identity._hop_state import HopState, missing_state, quiet_state
from otel_identity._identity import Identity
from otel_identity._runtime import attach, attached, current_context, detach
from otel_identity._state import HOP_KEY, SLOT_KEY, UserSlot, state_of
from otel_identity._thread_state import ThreadState


class Handoff(UserSlot):
    """An in-process hop that owns its thread while it runs: a thread's ``run``, a pool task.

    The hop runs on exactly the Context the sender captured; what makes it a hop of its own,
    its ``state`` (a HopState) and its own ``current_user`` slot (this object), is kept for
    the thread (see ``enter``) instead of in a copy of the Context with two more keys:
    copying an OTel Context costs more than all the rest of a thread hop. Since the hop owns
    the thread, whatever runs there meanwhile is part of it. It applies to every context that
    still carries the captured context's hop entry (a span started inside, say), and is their
    user slot while they also carry its slot entry; an identity set inside gets a slot of its
    own, as anywhere. A pool's work item is itself a Handoff, so a pool hop allocates nothing.
    """

    __slots__ = ("outer", "source", "state", "thread_state")
    outer: Handoff | None  # the hand-off this one interrupted in the same thread
    source: Context  # None on a pool task that is not a hop (see otel_identity_threading)
    state: Any  # the hop's HopState, set when it is entered
    thread_state: ThreadState

    def __init__(self, source: Context) -> None:
        self.source = source  # the context the sender captured at hand-off

    # What a slot is asked, derived rather than stored: entering a hop stays three stores.
    @property
    def hop(self) -> str | None:  # type: ignore[override]
        return getattr(self.state, "hop", None)

    @property
    def identity(self) -> Identity | None:  # type: ignore[override]
        state = state_of(self.source)
        return None if state is None else state.identity

    @property
    def thread(self) -> int:  # type: ignore[override]
        return self.thread_state.ident


def hop_of(ctx: Context) -> object:
    """The hop state of ``ctx``: its own entry, or that of the hand-off it runs in."""
    hop = ctx.get(HOP_KEY)
    handoff = _thread_state.here().handoff
    if handoff is not None and hop is handoff.source.get(HOP_KEY):
        return handoff.state
    return hop


def hop_state(context: Context | None = None) -> HopState | None:
    """The state of the receiving hop ``context`` belongs to, if any."""
    return hop_of(context if context is not None else current_context())  # type: ignore[return-value]


def user_slot(ctx: Context) -> UserSlot | None:
    """The user slot of ``ctx``: its own, or the hand-off's it runs in (see Handoff)."""
    slot: UserSlot | None = ctx.get(SLOT_KEY)  # type: ignore[assignment]
    handoff = _thread_state.here().handoff
    if handoff is not None:
        source = handoff.source
        if slot is source.get(SLOT_KEY) and ctx.get(HOP_KEY) is source.get(HOP_KEY):
            return handoff  # type: ignore[no-any-return]
    return slot


def arrived_state(context: Context, hop: str) -> HopState:
    """The state of a ``hop`` hand-off of ``context`` (not counted yet): the hop kind's shared
    one when it carries identity, else a missing one."""
    if state_of(context) is not None:
        return quiet_state(hop, names.OUTCOME_PRESENT)
    return missing_state(hop)


def receive(context: Context, *, hop: str) -> Context:
    """The receiving side of an in-process hand-off (thread, executor, task).

    ``context`` was captured by the sender at hand-off; the result is that context as a new
    hop: counted, with a fresh ``current_user`` slot so the receiver resolves its own user
    object, and with ``identity.missing`` pending for the hop's first span if required.
    """
    try:
        state = state_of(context)
        hop_state = arrived_state(context, hop)
        _counts.count(hop_state.key)
        values: dict[str, object] = dict(context)
        if state is not None:
            values[SLOT_KEY] = UserSlot(hop, state.identity)
        values[HOP_KEY] = hop_state
        return Context(values)
    except Exception:  # noqa: BLE001
        _telemetry.log_internal_error("receive")
        return context


def continue_context(context: Context, *, hop: str) -> AbstractContextManager[Identity | None]:
    """``receive`` and attach for the block: the in-process twin of ``continue_from``."""
    return attached(receive(context, hop=hop))


def enter(handoff: Handoff, hop: str) -> Any:
    """Start ``handoff``, a hop that owns this thread while it runs; ``leave`` ends it.

    ``handoff.source`` (the context the sender captured) is attached as it is, no copy, and
    ``handoff`` is kept for the thread: the hop is counted, gets ``handoff`` as its own
    ``current_user`` slot, and a ``HopState`` (with ``identity.missing`` pending for its first
    span where required). For hops that run synchronously to their end in the thread (a
    thread's ``run``, a pool task); everything else, async code included, uses
    ``continue_context``. Never raises: on an internal error the hop runs on the captured
    context with no hop of its own. Returns the token for ``leave``.
    """
    try:
        here = _thread_state.here()
        handoff.thread_state = here
        handoff.outer = here.handoff
        handoff.state = state = arrived_state(handoff.source, hop)
        _counts.count(state.key)
        here.handoff = handoff
    except Exception:  # noqa: BLE001
        _telemetry.log_internal_error("enter")
    return attach(handoff.source)


def leave(handoff: Handoff, token: Any) -> None:
    """End the hop ``enter`` started (in the same thread, innermost first)."""
    try:  # noqa: SIM105 - contextlib.suppress would cost a context manager on every hop
        handoff.thread_state.handoff = handoff.outer
    except AttributeError:  # enter failed before it kept the hand-off for the thread
        pass
    detach(token)
