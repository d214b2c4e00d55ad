"""What the WSGI and ASGI calls look like, how their request headers are read, and a WSGI
body produced under the hop's context.

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]: ...

    body = HopIterable(app(environ, start_response), ctx, hop)   # each chunk under ``ctx``

Shared by the middleware (``_wsgi``, ``_asgi``) and the re-attach taps (``_tap``), so neither
imports the other's module.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from types import TracebackType
from typing import Any

from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter

from otel_identity.instrumentation import attach, detach
from otel_identity_http import _server

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


_ENVIRON_KEYS: dict[str, str] = {}


def environ_key(key: str) -> str:
    """The environ key of request header ``key`` (``baggage`` -> ``HTTP_BAGGAGE``)."""
    name = _ENVIRON_KEYS.get(key)
    if name is None:
        name = "HTTP_" + key.upper().replace("-", "_")
        if len(_ENVIRON_KEYS) < 256:  # propagator field names: a handful
            _ENVIRON_KEYS[key] = name
    return name


class EnvironGetter(Getter[Environ]):
    """Reads request headers from a WSGI environ (``baggage`` -> ``HTTP_BAGGAGE``)."""

    def get(self, carrier: Environ, key: str) -> list[str] | None:
        value = carrier.get(environ_key(key))
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Environ) -> list[str]:
        return [k[5:].lower().replace("_", "-") for k in carrier if k.startswith("HTTP_")]


environ_getter = EnvironGetter()


class ScopeGetter(Getter[Scope]):
    """Reads request headers from an ASGI scope (a list of ``(bytes, bytes)`` pairs)."""

    def get(self, carrier: Scope, key: str) -> list[str] | None:
        wanted = key.lower().encode("latin-1")
        values = [
            value.decode("latin-1")
            for name, value in carrier.get("headers") or ()
            if name.lower() == wanted
        ]
        return values or None

    def keys(self, carrier: Scope) -> list[str]:
        return [name.decode("latin-1").lower() for name, _ in carrier.get("headers") or ()]


scope_getter = ScopeGetter()


class HopIterable:
    """The app's response iterable, producing every chunk under the hop's context."""

    __slots__ = ("_ctx", "_hop", "_inner", "_iterator")

    def __init__(self, inner: Iterable[bytes], ctx: Context, hop: _server.ServerHop) -> None:
        self._inner = inner
        self._ctx = ctx
        self._hop = hop
        self._iterator: Iterator[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        token = attach(self._ctx)
        try:
            if self._iterator is None:
                self._iterator = iter(self._inner)
            return next(self._iterator)
        finally:
            detach(token)

    def close(self) -> None:
        token = attach(self._ctx)
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            _server.settle(self._hop)
            detach(token)

    def __enter__(self) -> HopIterable:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
