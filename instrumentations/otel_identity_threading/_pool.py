"""``ThreadPoolExecutor`` hops, made at the pool's work item rather than around ``submit``.

``submit`` (and so ``map``, ``loop.run_in_executor`` and ``asyncio.to_thread``) builds one
``concurrent.futures.thread._WorkItem`` per task, in the submitting thread, and the worker calls
its ``run``. Our subclass of it captures the current context when it is built and runs the task
as the core's hand-off hop on that context (see ``otel_identity.instrumentation.Handoff``): the work
item *is* the hop's state and ``current_user`` slot, so a hop allocates nothing of its own and
no wrapper sits on ``submit`` (this is the hottest hop there is; see
``benchmarks/bench_threads.py``). The task is accounted only if it really starts (not when it
was cancelled first), and its future's callbacks run after the hop ended, as without us.

Where the task is ``contextvars.Context.run`` of some context (``asyncio.to_thread``, or
``submit(ctx.run, fn)``), the hop is made inside that Context, around ``fn``: made outside, the
task would never see it.

Python 3.14 changed the work item (``_WorkItem(future, task)``); there the subclass makes the
task's callable the hop instead of replacing the stdlib's ``run``, to the same effect.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable
from concurrent.futures import thread as futures_thread
from typing import Any

from opentelemetry.context import Context

from otel_identity import instrumentation as oii
from otel_identity.instrumentation import (
    Handoff,
    current_context,
    enter_handoff,
    is_suppressed,
    leave_handoff,
)
from otel_identity_threading._threads import HOP, bind, is_context_run

_WorkItem: Any = futures_thread._WorkItem


def _inside_context_run(
    fn: Callable[..., Any], args: tuple[Any, ...], captured: Context
) -> tuple[Callable[..., Any], tuple[Any, ...]] | None:
    """For a task that is ``Context.run`` of ``fn``: the same task with the hop inside."""
    if type(fn) is functools.partial and fn.args and is_context_run(fn.func):
        inner = functools.partial(fn.func, bind(fn.args[0], captured), *fn.args[1:], **fn.keywords)
        return inner, args
    if args and is_context_run(fn):
        return fn, (bind(args[0], captured), *args[1:])
    return None


class HopWorkItem(Handoff, _WorkItem):  # type: ignore[misc]
    """A pool task that is a ``thread`` hop on the context it was submitted under.

    For the work item of Python 3.8-3.13: ``(future, fn, args, kwargs)``.
    """

    def __init__(
        self,
        future: Any,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        # The stdlib's __init__, with the capture added: this runs in every submit.
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.source = None  # type: ignore[assignment] # None: not a hop
        captured = current_context()
        if is_suppressed(captured):
            return
        kind = type(fn)
        if kind is functools.partial or kind is types.BuiltinMethodType:
            inner = _inside_context_run(fn, args, captured)
            if inner is not None:
                self.fn, self.args = inner
                return
        self.source = captured

    def run(self) -> None:
        if self.source is None:
            _WorkItem.run(self)
            return
        future = self.future
        if not future.set_running_or_notify_cancel():
            return
        token = enter_handoff(self, HOP)
        try:
            result = self.fn(*self.args, **self.kwargs)
        except BaseException as exc:  # noqa: BLE001 - the future carries it, as in the stdlib
            leave_handoff(self, token)
            future.set_exception(exc)
            # Break the cycle exc -> traceback -> this frame -> exc, as the stdlib does.
            self = future = None  # type: ignore[assignment] # noqa: PLW0642
        else:
            leave_handoff(self, token)
            future.set_result(result)


def task_hop_item(base: Any) -> type:
    """A pool task that is a ``thread`` hop, for the work item of Python 3.14+ (``base``).

    There the item holds the executor's resolved task, ``(fn, args, kwargs)`` for threads;
    ``fn`` is run as the hop, so (as above) a cancelled task is not counted and the future's
    callbacks run after the hop. A task of any other shape is left as it is: no hop.
    """

    class WrappingHopWorkItem(Handoff, base):  # type: ignore[misc]
        def __init__(self, future: Any, *task: Any, **kwargs: Any) -> None:
            self.source = None  # type: ignore[assignment] # None: not a hop
            resolved = task[0] if len(task) == 1 else None
            if type(resolved) is tuple and len(resolved) == 3 and callable(resolved[0]):
                captured = current_context()
                if not is_suppressed(captured):
                    fn, args, fn_kwargs = resolved
                    inner = _inside_context_run(fn, args, captured)
                    if inner is None:
                        self.source = captured
                        self.task_fn = fn
                        task = ((self.hop_call, args, fn_kwargs),)
                    else:
                        task = ((*inner, fn_kwargs),)
            base.__init__(self, future, *task, **kwargs)

        def hop_call(self, *args: Any, **kwargs: Any) -> Any:
            token = enter_handoff(self, HOP)
            try:
                return self.task_fn(*args, **kwargs)
            finally:
                leave_handoff(self, token)

    return WrappingHopWorkItem


WrappingHopWorkItem = task_hop_item(_WorkItem)


_KNOWN_SHAPE = list(inspect.signature(_WorkItem.__init__).parameters) == [
    "self",
    "future",
    "fn",
    "args",
    "kwargs",
]
WORK_ITEM: type = HopWorkItem if _KNOWN_SHAPE else WrappingHopWorkItem


def install(item: type = WORK_ITEM) -> None:
    """Make ``ThreadPoolExecutor`` build our work items (idempotent)."""
    current = futures_thread._WorkItem
    if current is _WorkItem:
        futures_thread._WorkItem = item  # type: ignore[misc,assignment]
    elif current not in (HopWorkItem, WrappingHopWorkItem):
        oii.log_once(
            30,  # logging.WARNING
            ("threading.wrap", "_WorkItem"),
            "otel-identity: concurrent.futures.thread._WorkItem was already replaced by "
            "something else; thread pool tasks will not carry identity",
        )


def uninstall() -> bool:
    """Restore the stdlib's work item; False if something else replaced ours since."""
    current = futures_thread._WorkItem
    if current is _WorkItem:
        return True
    if current in (HopWorkItem, WrappingHopWorkItem):
        futures_thread._WorkItem = _WorkItem  # type: ignore[misc]
        return True
    oii.log_once(
        30,  # logging.WARNING
        ("threading.unwrap", "_WorkItem"),
        "otel-identity: concurrent.futures.thread._WorkItem was replaced by something else "
        "after otel-identity; left as it is",
    )
    return False
