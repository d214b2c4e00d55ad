"""Message headers of every shape, and identity per item through in-process queues.

Message brokers hand headers over in a handful of shapes; the getter and setter here read and
write all of them, so every queue integration goes through ``oi.inject``/``oi.extract`` with the
same pair:

    headers: list[tuple[str, bytes]] = []                      # Kafka style
    oi.inject(headers, headers_setter, hop="queue.publish")
    ...
    with oi.continue_from(msg_headers, headers_getter, hop="queue.consume"):
        handle(message)

Shapes: a mapping of ``str`` or ``bytes`` values (a value may also be a list of them), and a
sequence of ``(key, value)`` pairs whose keys and values are ``str`` or ``bytes`` (Kafka; a key
may repeat: the first wins on read, a write replaces every earlier entry). Bytes are decoded as
UTF-8 with replacement, anything else is ignored: headers come from the wire and a hostile
value must never raise.

In-process queues carry the sender's context object itself, no serialisation:

    q = IdentityQueue(queue.Queue())         # AsyncIdentityQueue(asyncio.Queue()) for asyncio
    q.put(job)                               # captures the caller's context (identity, trace)
    with q.get() as job:                     # this block runs under the job's identity
        handle(job)
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from typing import Any, Generic, Literal, TypeVar

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter

from otel_identity import _telemetry, names
from otel_identity._hops import extract, receive

T = TypeVar("T")
R = TypeVar("R")
ValueType = Literal["auto", "str", "bytes"]


def header_text(value: object) -> str | None:
    """A header value as text: ``str`` as is, ``bytes`` decoded leniently, anything else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    return None


def _key_text(key: object) -> str | None:
    if isinstance(key, str):
        return key
    if isinstance(key, (bytes, bytearray)):
        return bytes(key).decode("utf-8", "replace")
    return None


def _values(value: object) -> list[str] | None:
    text = header_text(value)
    if text is not None:
        return [text]
    if isinstance(value, (list, tuple)):
        texts = [t for t in (header_text(v) for v in value) if t is not None]
        return texts or None
    return None


def _pairs(carrier: object) -> Iterator[tuple[str, object]]:
    """(key, value) of a sequence of pairs; malformed entries are skipped, never raised on."""
    if not isinstance(carrier, (list, tuple)):
        return
    for entry in carrier:
        if isinstance(entry, (list, tuple)) and len(entry) == 2:
            key = _key_text(entry[0])
            if key is not None:
                yield key, entry[1]


class HeadersGetter(Getter[Any]):
    """Reads any header shape (see the module docstring). Keys match exactly, then ignoring
    case: some brokers and proxies capitalise header names on the way."""

    def get(self, carrier: Any, key: str) -> list[str] | None:
        try:
            return self._get(carrier, key)
        except Exception:  # noqa: BLE001 - a hostile carrier (odd __getitem__, say) must not raise
            _telemetry.log_internal_error("HeadersGetter.get")
            return None

    def keys(self, carrier: Any) -> list[str]:
        try:
            if isinstance(carrier, Mapping):
                return [k for k in (_key_text(k) for k in carrier) if k is not None]
            return [key for key, _ in _pairs(carrier)]
        except Exception:  # noqa: BLE001
            _telemetry.log_internal_error("HeadersGetter.keys")
            return []

    @staticmethod
    def _get(carrier: Any, key: str) -> list[str] | None:
        if isinstance(carrier, Mapping):
            if key in carrier:
                return _values(carrier[key])
            folded = key.lower()
            for name, value in carrier.items():
                name_text = _key_text(name)
                if name_text is not None and name_text.lower() == folded:
                    return _values(value)
            return None
        fallback: object = None
        found = False
        folded = key.lower()
        for name, value in _pairs(carrier):
            if name == key:
                return _values(value)
            if not found and name.lower() == folded:
                fallback, found = value, True
        return _values(fallback) if found else None


class HeadersSetter(Setter[Any]):
    """Writes into a mutable mapping or a list of pairs.

    ``value_type`` chooses what a value is written as: ``"str"``, ``"bytes"``, or ``"auto"``
    (default): like the carrier's existing values, else ``str`` in a mapping and ``bytes`` in
    a list (Kafka clients take bytes). A carrier that cannot be written to is logged, once,
    and left alone: publishing must not fail because of identity.
    """

    def __init__(self, value_type: ValueType = "auto") -> None:
        if value_type not in ("auto", "str", "bytes"):
            raise ValueError("value_type must be 'auto', 'str' or 'bytes'")
        self.value_type: ValueType = value_type

    def set(self, carrier: Any, key: str, value: str) -> None:
        try:
            if isinstance(carrier, MutableMapping):
                carrier[key] = self._encode(value, carrier.values(), as_bytes=False)
            elif isinstance(carrier, list):
                self._set_pair(carrier, key, value)
            else:
                _telemetry.log_once(
                    logging.WARNING,
                    ("carrier", type(carrier).__name__),
                    "otel-identity: cannot write headers into a %s; pass a dict or a list",
                    type(carrier).__name__,
                )
        except Exception:  # noqa: BLE001
            _telemetry.log_internal_error("HeadersSetter.set")

    def _encode(self, value: str, existing: Iterable[object], *, as_bytes: bool) -> str | bytes:
        mode = self.value_type
        if mode == "auto":
            for old in existing:
                if isinstance(old, (bytes, bytearray)):
                    as_bytes = True
                    break
                if isinstance(old, str):
                    as_bytes = False
                    break
        elif mode == "bytes":
            as_bytes = True
        else:
            as_bytes = False
        return value.encode("utf-8") if as_bytes else value

    def _set_pair(self, carrier: list[Any], key: str, value: str) -> None:
        encoded = self._encode(value, (v for _, v in _pairs(carrier)), as_bytes=True)
        first: int | None = None
        index = 0
        while index < len(carrier):
            entry = carrier[index]
            if isinstance(entry, (list, tuple)) and len(entry) == 2 and _key_text(entry[0]) == key:
                if first is None:
                    first = index
                    carrier[index] = (key, encoded)
                else:
                    del carrier[index]
                    continue
            index += 1
        if first is None:
            carrier.append((key, encoded))


headers_getter = HeadersGetter()
headers_setter = HeadersSetter()
text_headers_setter = HeadersSetter("str")
bytes_headers_setter = HeadersSetter("bytes")


def delivery_context(
    message: object, read: Callable[[Any], tuple[object, object]], *, where: str
) -> Context:
    """The ``queue.consume`` hop of one delivered message, through ``extract``.

    ``read(message)`` gives its headers (any shape above) and its route (queue, topic or
    subject, for the anonymous-route rule). A message it cannot read is logged as ``where``
    and hops without identity: an odd message object never breaks the consumer.
    """
    try:
        headers, route = read(message)
    except Exception:  # noqa: BLE001
        _telemetry.log_internal_error(where)
        headers, route = None, None
    return extract(
        headers if headers is not None else (),
        headers_getter,
        hop=names.HOP_QUEUE_CONSUME,
        route=route if isinstance(route, str) else None,
    )


# -- poll loops --------------------------------------------------------------------------------
#
# A consumer that hands out one message per call (Kafka's poll, NATS's next_msg, a
# ``for delivery in channel.consume()`` loop) has no block around the user's processing code:
# the message's context is attached when the message is handed out and stays current until
# the same consumer hands out the next one (or is closed).

_HELD = "_otel_identity_held"


def hold(owner: object, ctx: Context) -> None:
    """Attach ``ctx`` until ``release(owner)``; what ``owner`` held before is released first."""
    release(owner)
    token = otel_context.attach(ctx)
    try:
        owner.__dict__[_HELD] = (threading.get_ident(), token, ctx)
    except AttributeError:  # no place to remember it: better no identity than a stale one
        otel_context.detach(token)


def release(owner: object) -> None:
    """Detach what ``owner`` holds, if any, and only while it is still the current context:
    if the code around the loop has already unwound past it (a ``with`` block that ended
    between polls), resetting to what was current at attach time would bring that block's
    stale context back."""
    held = getattr(owner, "__dict__", {}).pop(_HELD, None)
    if (
        held is not None
        and held[0] == threading.get_ident()
        and otel_context.get_current() is held[2]
    ):
        otel_context.detach(held[1])


# -- in-process queues -------------------------------------------------------------------------


class Envelope(Generic[T]):
    """An item with the context it was sent under.

    ``with envelope as item:`` runs the block as a ``queue.consume`` hop under the sender's
    identity (none if it had none: a previous item's identity never carries over), with a
    fresh ``current_user``; ``envelope.run(fn, *args)`` does the same for one call.
    """

    __slots__ = ("_tokens", "context", "item")

    def __init__(self, item: T, context: Context) -> None:
        self.item = item
        self.context = context
        self._tokens: list[tuple[int, object]] = []

    def __enter__(self) -> T:
        token = otel_context.attach(receive(self.context, hop=names.HOP_QUEUE_CONSUME))
        self._tokens.append((threading.get_ident(), token))
        return self.item

    def __exit__(self, *exc_info: object) -> None:
        # Per thread: an envelope fanned out to several consumer threads stays consistent.
        me = threading.get_ident()
        tokens = self._tokens
        for index in range(len(tokens) - 1, -1, -1):
            if tokens[index][0] == me:
                otel_context.detach(tokens.pop(index)[1])  # type: ignore[arg-type]
                return

    def run(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        token = otel_context.attach(receive(self.context, hop=names.HOP_QUEUE_CONSUME))
        try:
            return fn(*args, **kwargs)
        finally:
            otel_context.detach(token)

    def __repr__(self) -> str:
        return f"Envelope({self.item!r})"


def seal(item: T, *, context: Context | None = None) -> Envelope[T]:
    """``item`` with the current context (or ``context``), ready for any in-process queue."""
    return Envelope(item, context if context is not None else otel_context.get_current())


class IdentityQueue(Generic[T]):
    """A ``queue.Queue`` (or any object with its put/get) whose items keep their identity.

    ``put``/``put_nowait`` seal the item with the caller's context; ``get``/``get_nowait``
    return the ``Envelope``: use it as ``with q.get() as item:``.
    """

    def __init__(self, inner: queue.Queue[Envelope[T]] | None = None) -> None:
        self.inner: queue.Queue[Envelope[T]] = inner if inner is not None else queue.Queue()

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        self.inner.put(seal(item), block, timeout)

    def put_nowait(self, item: T) -> None:
        self.inner.put_nowait(seal(item))

    def get(self, block: bool = True, timeout: float | None = None) -> Envelope[T]:
        return self.inner.get(block, timeout)

    def get_nowait(self) -> Envelope[T]:
        return self.inner.get_nowait()

    def task_done(self) -> None:
        self.inner.task_done()

    def join(self) -> None:
        self.inner.join()

    def qsize(self) -> int:
        return self.inner.qsize()

    def empty(self) -> bool:
        return self.inner.empty()


class AsyncIdentityQueue(Generic[T]):
    """``IdentityQueue`` for ``asyncio.Queue``: ``await q.put(x)``; ``with await q.get() as x:``."""

    def __init__(self, inner: asyncio.Queue[Envelope[T]] | None = None) -> None:
        self.inner: asyncio.Queue[Envelope[T]] = inner if inner is not None else asyncio.Queue()

    async def put(self, item: T) -> None:
        await self.inner.put(seal(item))

    def put_nowait(self, item: T) -> None:
        self.inner.put_nowait(seal(item))

    async def get(self) -> Envelope[T]:
        return await self.inner.get()

    def get_nowait(self) -> Envelope[T]:
        return self.inner.get_nowait()

    def task_done(self) -> None:
        self.inner.task_done()

    async def join(self) -> None:
        await self.inner.join()

    def qsize(self) -> int:
        return self.inner.qsize()

    def empty(self) -> bool:
        return self.inner.empty()


__all__ = [
    "AsyncIdentityQueue",
    "Envelope",
    "HeadersGetter",
    "HeadersSetter",
    "IdentityQueue",
    "bytes_headers_setter",
    "header_text",
    "hold",
    "headers_getter",
    "headers_setter",
    "release",
    "seal",
    "text_headers_setter",
]
