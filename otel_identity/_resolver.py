"""From identity to the application's user object: the resolver and ``current_user``.

    @oi.user_resolver(cache_ttl=None)
    def load_user(identity: oi.Identity) -> User | None:
        return db.session.get(User, identity.user_id)

    oi.current_user.email          # resolved lazily, once per hop, in the hop's own thread

Resolution is lazy (nothing runs until the user is asked for), happens at most once per hop and
identity, and always in the receiving hop's thread, so an ORM object comes from that thread's
own session and never from the sender's. An optional process-wide TTL cache (off by default,
for resolvers that return immutable values) sits behind it, with single-flight on misses.

A resolver that raises or times out never breaks the request path: the user is None, an
``identity.resolve_failed`` event is recorded on the current span, and the error is logged once
per exception type.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar, cast, overload

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context

from otel_identity import _config, _telemetry, names
from otel_identity._handoff import user_slot
from otel_identity._identity import Identity
from otel_identity._state import UserSlot, state_of

Resolver = Callable[[Identity], Any]
R = TypeVar("R", bound=Resolver)

_lock = threading.Lock()
_resolver: Resolver | None = None
_explicit = False  # set in code: the environment's OTEL_IDENTITY_RESOLVER no longer applies
_timeout: float | None = None
_cache: _TTLCache | None = None
_loop_thread: _LoopThread | None = None


class _TTLCache:
    """Process-wide cache of resolved users, LRU-bounded, with single-flight on misses."""

    def __init__(self, ttl: float, size: int) -> None:
        self.ttl = ttl
        self.size = size
        self._data: collections.OrderedDict[Hashable, tuple[float, object]] = (
            collections.OrderedDict()
        )
        self._inflight: dict[Hashable, concurrent.futures.Future[object]] = {}
        self._loops: dict[concurrent.futures.Future[object], object] = {}
        self._lock = threading.Lock()

    def lookup(
        self, key: Hashable, loop: asyncio.AbstractEventLoop | None = None
    ) -> tuple[bool, object, concurrent.futures.Future[object]]:
        """(hit, value, future): on a miss, the caller leads if it got a new future.

        ``loop`` is the event loop a leading caller resolves on (None for a synchronous
        lead); a follower finds it as ``loop_of(future)``, so that a synchronous read never
        waits for a resolution that needs the very loop it would block.
        """
        with self._lock:
            entry = self._data.get(key)
            if entry is not None and entry[0] > time.monotonic():
                self._data.move_to_end(key)
                return True, entry[1], _DONE
            future = self._inflight.get(key)
            if future is None:
                future = concurrent.futures.Future()
                future.set_running_or_notify_cancel()
                self._inflight[key] = future
                self._loops[future] = loop
                return False, _LEAD, future
            return False, None, future

    def loop_of(self, future: concurrent.futures.Future[object]) -> object:
        """The event loop the in-flight resolution behind ``future`` runs on, or None."""
        with self._lock:
            return self._loops.get(future)

    def complete(
        self, key: Hashable, future: concurrent.futures.Future[object], value: object
    ) -> None:
        with self._lock:
            self._inflight.pop(key, None)
            self._loops.pop(future, None)
            if value is not None:
                self._data[key] = (time.monotonic() + self.ttl, value)
                self._data.move_to_end(key)
                while len(self._data) > self.size:
                    self._data.popitem(last=False)
        future.set_result(value)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


_LEAD = object()
_DONE: concurrent.futures.Future[object] = concurrent.futures.Future()


class _LoopThread:
    """An event loop of our own, for an async resolver asked for from synchronous code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        thread = threading.Thread(target=self.loop.run_forever, name="otel-identity-resolver")
        thread.daemon = True
        thread.start()

    def run(self, awaitable: Awaitable[object], timeout: float | None) -> object:
        future = asyncio.run_coroutine_threadsafe(_as_coroutine(awaitable), self.loop)
        return future.result(timeout)


async def _as_coroutine(awaitable: Awaitable[object]) -> object:
    return await awaitable


def set_user_resolver(
    fn: Resolver | None,
    *,
    cache_ttl: float | None = None,
    cache_size: int = 1024,
    timeout: float | None = None,
) -> None:
    """Register ``fn(identity) -> user | None`` (sync or async) as the process's resolver.

    ``cache_ttl`` (seconds) turns on the process-wide cache: only for resolvers returning
    values safe to share between threads. ``timeout`` bounds async resolvers (a sync resolver
    runs inline in the hop's thread and must bound its own I/O). ``None`` unregisters.
    """
    global _resolver, _explicit, _timeout, _cache
    if fn is not None and not callable(fn):
        raise TypeError("the resolver must be callable")
    if cache_ttl is not None and cache_ttl <= 0:
        raise ValueError("cache_ttl must be positive")
    if cache_size <= 0:
        raise ValueError("cache_size must be positive")
    with _lock:
        _resolver = fn
        _explicit = True
        _timeout = timeout
        _cache = _TTLCache(cache_ttl, cache_size) if cache_ttl is not None else None


@overload
def user_resolver(fn: R, /) -> R: ...
@overload
def user_resolver(
    *, cache_ttl: float | None = None, cache_size: int = 1024, timeout: float | None = None
) -> Callable[[R], R]: ...
def user_resolver(
    fn: R | None = None,
    /,
    *,
    cache_ttl: float | None = None,
    cache_size: int = 1024,
    timeout: float | None = None,
) -> R | Callable[[R], R]:
    """Decorator form of ``set_user_resolver``, with or without arguments."""

    def register(func: R) -> R:
        set_user_resolver(func, cache_ttl=cache_ttl, cache_size=cache_size, timeout=timeout)
        return func

    return register(fn) if fn is not None else register


def reset_resolver() -> None:
    """Forget the resolver and its cache (for tests); the environment applies again."""
    global _resolver, _explicit, _timeout, _cache
    with _lock:
        _resolver, _explicit, _timeout, _cache = None, False, None, None


def get_resolver() -> Resolver | None:
    """The registered resolver, loading ``OTEL_IDENTITY_RESOLVER`` on first use."""
    global _resolver, _explicit
    if _explicit:
        return _resolver
    with _lock:
        if not _explicit:
            _resolver = _load(_config.get_settings().resolver)
            _explicit = True
    return _resolver


def _load(spec: str | Callable[..., Any] | None) -> Resolver | None:
    if spec is None or callable(spec):
        return spec
    try:
        target = _config.import_object(spec)
    except Exception as exc:  # noqa: BLE001 - a bad setting must not break the app
        _telemetry.logger.error(
            "otel-identity: cannot load resolver %r (%s); current_user stays None",
            spec,
            type(exc).__name__,
        )
        return None
    if not callable(target):  # called on every hop, it would fail on every hop
        _telemetry.logger.error(
            "otel-identity: resolver %r is not callable; current_user stays None", spec
        )
        return None
    return cast("Resolver", target)


def _fail(exc: BaseException, hop: str | None, message: str | None = None) -> None:
    _telemetry.count_resolve_failure(type(exc).__name__)
    _telemetry.add_event(
        trace.get_current_span(),
        names.EVENT_RESOLVE_FAILED,
        {
            names.ATTR_HOP: hop or names.HOP_MANUAL,
            names.ATTR_EXCEPTION_TYPE: type(exc).__name__,
        },
    )
    if message is not None:
        _telemetry.log_once(logging.WARNING, ("resolve_failed", type(exc).__name__), message)
        return
    _telemetry.log_once(
        logging.ERROR,
        ("resolve_failed", type(exc).__name__),
        "otel-identity: user resolver failed with %s; current_user is None for this hop "
        "(logged once per exception type)",
        type(exc).__name__,
    )


def _call_sync(fn: Resolver, identity: Identity, hop: str | None) -> object:
    start = time.perf_counter()
    try:
        result = fn(identity)
        if inspect.isawaitable(result):
            result = _await_from_sync(result)
        return result
    except Exception as exc:  # noqa: BLE001 - the resolver's failure is recorded, not raised
        _fail(exc, hop)
        return None
    finally:
        _telemetry.record_resolve_duration(time.perf_counter() - start, hop)


def _await_from_sync(awaitable: Awaitable[object]) -> object:
    global _loop_thread
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        running = False
    else:
        running = True
    if not running:
        return asyncio.run(_with_timeout(awaitable))
    # Called synchronously from inside an event loop: block on a loop of our own rather than
    # deadlocking this one. ``await oi.aget_current_user()`` avoids the hop through a thread.
    if _loop_thread is None:
        with _lock:
            if _loop_thread is None:
                _loop_thread = _LoopThread()
    return _loop_thread.run(awaitable, _timeout)


async def _with_timeout(awaitable: Awaitable[object]) -> object:
    if _timeout is None:
        return await awaitable
    return await asyncio.wait_for(_as_coroutine(awaitable), _timeout)


async def _call_async(fn: Resolver, identity: Identity, hop: str | None) -> object:
    start = time.perf_counter()
    try:
        result = fn(identity)
        if inspect.isawaitable(result):
            result = await _with_timeout(result)
        return result
    except Exception as exc:  # noqa: BLE001
        _fail(exc, hop)
        return None
    finally:
        _telemetry.record_resolve_duration(time.perf_counter() - start, hop)


def _resolve_sync(fn: Resolver, identity: Identity, hop: str | None) -> object:
    cache = _cache
    if cache is None:
        return _call_sync(fn, identity, hop)
    key = identity.claims()
    hit, value, future = cache.lookup(key)
    if hit:
        return value
    if value is not _LEAD:
        return _follow(cache, future, hop)
    result = None
    try:
        result = _call_sync(fn, identity, hop)
    finally:
        cache.complete(key, future, result)
    return result


class LoopWouldBlockError(RuntimeError):
    """A synchronous ``current_user`` read on an event loop's thread would have waited for a
    resolution that needs that very loop (the ``exception.type`` of its resolve_failed event)."""


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _follow(cache: _TTLCache, future: concurrent.futures.Future[object], hop: str | None) -> object:
    """Wait for another caller's resolution of the same identity, where waiting is safe.

    On a thread that runs an event loop, blocking stalls every task of that loop: a
    resolution in flight on the same loop could then never finish (a deadlock), so that read
    gets None at once; one in flight elsewhere is waited for at most the resolver's timeout.
    """
    here = _running_loop()
    if here is None:
        return future.result()
    if cache.loop_of(future) is here:
        _fail(LoopWouldBlockError(), hop, _AWAIT_INSTEAD)
        return None
    try:
        return future.result(_timeout)
    except concurrent.futures.TimeoutError as exc:
        _fail(exc, hop, _AWAIT_INSTEAD)
        return None


_AWAIT_INSTEAD = (
    "otel-identity: current_user was read synchronously on an event loop's thread while the"
    " same user was being resolved asynchronously; it is None for this read. Async code should"
    " use `await oi.aget_current_user()` (logged once)"
)


async def _resolve_async(fn: Resolver, identity: Identity, hop: str | None) -> object:
    cache = _cache
    if cache is None:
        return await _call_async(fn, identity, hop)
    key = identity.claims()
    hit, value, future = cache.lookup(key, asyncio.get_running_loop())
    if hit:
        return value
    if value is not _LEAD:
        return await asyncio.wrap_future(future)
    result = None
    try:
        result = await _call_async(fn, identity, hop)
    finally:
        cache.complete(key, future, result)
    return result


def _lookup(
    context: Context | None,
) -> tuple[Resolver, Identity, UserSlot | None, str | None] | None:
    """(resolver, identity, this thread's slot or None, hop), or None when there is no user.

    A slot counts only in the thread that entered the hop and for the identity it was made
    for; otherwise the user is resolved without the per-hop memo.
    """
    ctx = context if context is not None else otel_context.get_current()
    state = state_of(ctx)
    if state is None:
        return None
    fn = _resolver if _explicit else get_resolver()
    if fn is None:
        return None
    identity = state.identity
    slot = user_slot(ctx)
    hop = slot.hop if slot is not None else None
    if slot is not None and (slot.thread != threading.get_ident() or slot.identity != identity):
        slot = None
    return fn, identity, slot, hop


def get_current_user(context: Context | None = None) -> Any:
    """The user of ``context`` (default: current), resolved at most once per hop; or None."""
    found = _lookup(context)
    if found is None:
        return None
    fn, identity, slot, hop = found
    if slot is None:
        return _resolve_sync(fn, identity, hop)
    if not slot.done:
        if slot.pending is not None:  # re-entered from inside the resolver itself
            return None
        slot.pending = True
        try:
            slot.user = _resolve_sync(fn, identity, slot.hop)
            slot.done = True
        finally:
            slot.pending = None
    return slot.user


async def aget_current_user(context: Context | None = None) -> Any:
    """``get_current_user`` for async code: awaits an async resolver on the running loop."""
    found = _lookup(context)
    if found is None:
        return None
    fn, identity, slot, hop = found
    if slot is None:
        return await _resolve_async(fn, identity, hop)
    if slot.done:
        return slot.user
    if isinstance(slot.pending, asyncio.Future):  # another task of this hop is resolving
        return await asyncio.shield(slot.pending)
    if slot.pending is not None:
        return None
    pending: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    slot.pending = pending
    try:
        slot.user = await _resolve_async(fn, identity, slot.hop)
        slot.done = True
    finally:
        slot.pending = None
        pending.set_result(slot.user)
    return slot.user


def clear_cache() -> None:
    """Empty the process-wide user cache (say, after a user's permissions changed)."""
    cache = _cache
    if cache is not None:
        cache.clear()


class CurrentUser:
    """A proxy to the resolved user of the current context, like Flask-Login's.

    Attribute access, ``bool``, ``==``, ``hash``, ``repr`` and ``isinstance`` go to the user
    object; without identity (or without a user) it is falsy, equals None, and reading an
    attribute raises ``AttributeError`` saying why.
    """

    __slots__ = ()

    def _get_current_object(self) -> Any:
        return get_current_user()

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # so isinstance(current_user, User) works, as with werkzeug
        user = get_current_user()
        return CurrentUser if user is None else type(user)

    def __getattr__(self, name: str) -> Any:
        user = get_current_user()
        if user is None:
            raise AttributeError(
                f"current_user is None (no identity in this context, or the resolver found no"
                f" user): cannot read {name!r}"
            )
        return getattr(user, name)

    def __setattr__(self, name: str, value: Any) -> None:
        user = get_current_user()
        if user is None:
            raise AttributeError(f"current_user is None: cannot set {name!r}")
        setattr(user, name, value)

    def __bool__(self) -> bool:
        user = get_current_user()
        return user is not None and bool(user)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CurrentUser):
            other = other._get_current_object()
        return bool(get_current_user() == other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(get_current_user())

    def __repr__(self) -> str:
        return repr(get_current_user())

    def __str__(self) -> str:
        return str(get_current_user())

    def __dir__(self) -> list[str]:
        user = get_current_user()
        return dir(user) if user is not None else []


current_user: Any = CurrentUser()
