"""In-process hops: ``threading.Thread`` and ``Timer`` (pools are in ``_pool``).

Every hop is the same three steps as OpenTelemetry's threading instrumentation, with the hop
made in between: capture ``context.get_current()`` at hand-off (``start``), and in the
receiving thread run the work as the core's hand-off hop on exactly that context (``enter``/
``leave``: counted, with its own ``current_user`` slot). Attaching exactly the captured
context matters as much as carrying it: a reused pool worker (or, on Python 3.14 with
``sys.flags.thread_inherit_context``, a worker that inherited the context of the task that
created it) must not lend a task the identity of another.

Next to ``opentelemetry-instrumentation-threading`` either wrapper may sit outside: both
capture the same Context object, and the core recognises the hop on it whoever attaches it.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from otel_identity import names
from otel_identity.instrumentation import Handoff, enter_handoff, leave_handoff
from otel_identity_threading._workers import is_worker_loop

HOP = names.HOP_THREAD
# Where ``start`` leaves the captured context for ``run`` (a name of our own: the contrib
# instrumentation uses ``_otel_context``).
_ATTR = "_otel_identity_context"

# What a pool's worker thread runs on (see _workers): nothing, and no hop.
_EMPTY = Context()

_get_current = otel_context.get_current


def bind(fn: Callable[..., Any], captured: Context) -> Callable[..., Any]:
    """``fn`` as a hop on ``captured``, in whichever thread calls it."""

    def otel_identity_hop(*args: Any, **kwargs: Any) -> Any:
        handoff = Handoff(captured)
        token = enter_handoff(handoff, HOP)
        try:
            return fn(*args, **kwargs)
        finally:
            leave_handoff(handoff, token)

    otel_identity_hop.__wrapped__ = fn  # type: ignore[attr-defined]
    return otel_identity_hop


def is_context_run(fn: object) -> bool:
    """Whether ``fn`` is ``contextvars.Context.run`` (of some Context)."""
    return isinstance(getattr(fn, "__self__", None), contextvars.Context) and (
        getattr(fn, "__name__", None) == "run"
    )


def wrap_thread_start(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if is_instrumentation_enabled():
        worker = is_worker_loop(getattr(instance, "_target", None), type(instance))
        setattr(instance, _ATTR, _EMPTY if worker else _get_current())
        if _overrides_run(type(instance)):
            _hop_instance_run(instance)
    return wrapped(*args, **kwargs)


def _overrides_run(cls: type) -> bool:
    """Whether ``cls.run`` never reaches the ``run`` we wrapped (Thread's or Timer's)."""
    for klass in cls.__mro__:
        if "run" in klass.__dict__:
            return klass is not threading.Thread and klass is not threading.Timer
    return False


def _hop_instance_run(instance: Any) -> None:
    """Wrap the ``run`` of a Thread subclass that overrides it, for this one start only.

    The thread's bootstrap calls ``self.run()``, so an instance attribute is the one place
    that sees every override; it removes itself before the work starts. Should the override
    call ``super().run()``, that finds the context already taken and does not hop twice.
    """
    original = instance.run

    def run(*args: Any, **kwargs: Any) -> Any:
        instance.__dict__.pop("run", None)
        return wrap_thread_run(original, instance, args, kwargs)

    instance.run = run


def wrap_thread_run(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    captured = instance.__dict__.pop(_ATTR, None)
    if captured is None or not is_instrumentation_enabled():
        return wrapped(*args, **kwargs)
    if captured is _EMPTY:
        token = otel_context.attach(_EMPTY)
        try:
            return wrapped(*args, **kwargs)
        finally:
            otel_context.detach(token)
    handoff = Handoff(captured)
    token = enter_handoff(handoff, HOP)
    try:
        return wrapped(*args, **kwargs)
    finally:
        leave_handoff(handoff, token)


TARGETS: tuple[tuple[type, str, Any], ...] = (
    (threading.Thread, "start", wrap_thread_start),
    (threading.Thread, "run", wrap_thread_run),
    # Timer inherits start but overrides run.
    (threading.Timer, "run", wrap_thread_run),
)
