"""In-process hops: ``threading.Thread``/``Timer`` and ``ThreadPoolExecutor.submit``.

Every hop is the same three steps as OpenTelemetry's threading instrumentation, with the hop
accounted in between: capture ``context.get_current()`` at hand-off (``start``/``submit``), and
in the receiving thread attach ``oi.receive(captured, hop="thread")`` around the work. Attaching
exactly the captured context matters as much as carrying it: a reused pool worker (or, on
Python 3.14 with ``sys.flags.thread_inherit_context``, a worker that inherited the context of
the task that created it) must not lend a task the identity of another.
"""

from __future__ import annotations

import contextvars
import functools
import sys
import threading
import types
from collections.abc import Callable
from concurrent import futures
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from otel_identity import names, receive
from otel_identity_threading._workers import is_worker_loop

_HOP = names.HOP_THREAD
# Where ``start`` leaves the captured context for ``run`` (a name of our own: the contrib
# instrumentation uses ``_otel_context``).
_ATTR = "_otel_identity_context"

# What a pool's worker thread runs on (see _workers): nothing, and no hop.
_EMPTY = Context()

# Python 3.14's InterpreterPoolExecutor is a ThreadPoolExecutor that pickles each task into
# another interpreter: a closure cannot travel there, and a Context could not be attached
# there anyway, so its tasks are left as they are (they carry no identity).
_NOT_IN_PROCESS: tuple[type, ...] = tuple(
    c for c in (getattr(futures, "InterpreterPoolExecutor", None),) if c is not None
)

_get_current = otel_context.get_current
_attach = otel_context.attach
_detach = otel_context.detach


def bind(fn: Callable[..., Any], captured: Context) -> Callable[..., Any]:
    """``fn`` as a hop: run under ``captured``, received in the calling thread."""

    def otel_identity_hop(*args: Any, **kwargs: Any) -> Any:
        token = _attach(receive(captured, hop=_HOP))
        try:
            return fn(*args, **kwargs)
        finally:
            _detach(token)

    otel_identity_hop.__wrapped__ = fn  # type: ignore[attr-defined]
    return otel_identity_hop


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
    token = _attach(captured if captured is _EMPTY else receive(captured, hop=_HOP))
    try:
        return wrapped(*args, **kwargs)
    finally:
        _detach(token)


def wrap_pool_submit(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if not args or not is_instrumentation_enabled():
        return wrapped(*args, **kwargs)
    if _NOT_IN_PROCESS and isinstance(instance, _NOT_IN_PROCESS):
        return wrapped(*args, **kwargs)
    captured = _get_current()
    fn, rest = args[0], args[1:]
    kind = type(fn)
    if kind is types.FunctionType:
        if fn.__code__.co_name == "wrapped_func":
            fn = _unwrap_contrib(fn)
        fn = bind(fn, captured)
    elif kind is functools.partial and _is_context_run(fn.func) and fn.args:
        # asyncio.to_thread hands over partial(ctx.run, func, ...): the hop must be attached
        # inside that contextvars.Context, or func would never see it.
        fn = functools.partial(fn.func, bind(fn.args[0], captured), *fn.args[1:], **fn.keywords)
    elif kind is types.BuiltinMethodType and _is_context_run(fn) and rest:
        rest = (bind(rest[0], captured), *rest[1:])  # submit(ctx.run, func, ...)
    else:
        fn = bind(fn, captured)
    return wrapped(fn, *rest, **kwargs)


def _is_context_run(fn: object) -> bool:
    return isinstance(getattr(fn, "__self__", None), contextvars.Context) and (
        getattr(fn, "__name__", None) == "run"
    )


# --- coexistence with opentelemetry-instrumentation-threading -------------------------------
#
# Its submit wrapper, sitting above ours, hands us a closure that attaches the context it
# captured a moment earlier in the same call, innermost: that attach would shadow our hop
# (the task would run with the sender's user slot and no hop state). It captured exactly what
# we capture, so we call the function it wraps instead; anything unrecognised is wrapped as is.

_CONTRIB_FREEVARS = frozenset({"original_func", "otel_context"})
_contrib_code: types.CodeType | None = None
_contrib_checked = False


def _contrib_submit_code() -> types.CodeType | None:
    global _contrib_code, _contrib_checked
    if _contrib_checked:
        return _contrib_code
    module = sys.modules.get("opentelemetry.instrumentation.threading")
    cls = getattr(module, "ThreadingInstrumentor", None)
    if cls is None:
        return None  # not loaded (yet): look again next time
    method = vars(cls).get("_ThreadingInstrumentor__wrap_thread_pool_submit")
    code = getattr(getattr(method, "__func__", method), "__code__", None)
    for const in getattr(code, "co_consts", ()):
        is_code = isinstance(const, types.CodeType)
        if is_code and frozenset(const.co_freevars) == _CONTRIB_FREEVARS:
            _contrib_code = const
    _contrib_checked = True
    return _contrib_code


def _unwrap_contrib(fn: Any) -> Any:
    code = _contrib_submit_code()
    if code is None or fn.__code__ is not code:
        return fn
    cells = dict(zip(code.co_freevars, fn.__closure__ or (), strict=False))
    cell = cells.get("original_func")
    return fn if cell is None else cell.cell_contents


TARGETS: tuple[tuple[type, str, Any], ...] = (
    (threading.Thread, "start", wrap_thread_start),
    (threading.Thread, "run", wrap_thread_run),
    # Timer inherits start but overrides run.
    (threading.Timer, "run", wrap_thread_run),
    (futures.ThreadPoolExecutor, "submit", wrap_pool_submit),
)
