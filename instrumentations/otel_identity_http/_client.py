"""The ``http.client`` side: identity on outgoing requests, and egress filtering at the transport.

Each library is patched at the last point before its headers reach the wire (urllib3's
``HTTPConnection.request``, requests' ``HTTPAdapter.send``, httpcore's connection pools under
httpx, aiohttp's ``ClientRequest.send``), so the check runs after every instrumentation and
hook has injected, whatever their load order:

* nothing injected yet (no OpenTelemetry client instrumentation): ``oi.inject`` writes trace
  context and baggage through the global propagator, egress policy included;
* something injected already: it is not injected twice; for a destination outside
  ``egress_allow`` the baggage it wrote is decoded with the global propagator, identity (or all
  baggage) is removed, an ``identity.stripped`` event is recorded, and the rest re-encoded.
"""

from __future__ import annotations

import abc
import contextvars
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.propagators.textmap import Getter, Setter

import otel_identity as oi
from otel_identity import _egress, _propagation, _telemetry, names
from otel_identity._context import all_identity_keys, state_of
from otel_identity._hops import outgoing_context, strip_for_egress
from otel_identity_http._server import baggage_fields, encoded_baggage, propagator_fields

HOP = names.HOP_HTTP_CLIENT
H = TypeVar("H")

# Set while requests' adapter sends, so urllib3 underneath does not handle the request twice.
handled: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "otel_identity_http_handled", default=False
)


class Headers(Getter[H], Setter[H], Generic[H]):
    """Getter, setter and remover for one library's headers object."""

    @abc.abstractmethod
    def remove(self, carrier: H, key: str) -> None:
        """Remove every value of header ``key``."""


class MappingHeaders(Headers[Any]):
    """Case-insensitive mappings: requests' CaseInsensitiveDict, urllib3's HTTPHeaderDict,
    aiohttp's CIMultiDict (all replace every value of a name on ``__setitem__``)."""

    def get(self, carrier: Any, key: str) -> list[str] | None:
        value = carrier.get(key)
        return None if value is None else [value]

    def keys(self, carrier: Any) -> list[str]:
        return list(carrier.keys())

    def set(self, carrier: Any, key: str, value: str) -> None:
        carrier[key] = value

    def remove(self, carrier: Any, key: str) -> None:
        popall = getattr(carrier, "popall", None)  # multidicts: drop every value
        if popall is not None:
            popall(key, None)
        else:
            carrier.pop(key, None)


class HttpcoreHeaders(Headers[list[tuple[bytes, bytes]]]):
    """httpcore's request headers: a list of ``(name, value)`` byte pairs."""

    def get(self, carrier: list[tuple[bytes, bytes]], key: str) -> list[str] | None:
        wanted = key.lower().encode("ascii")
        values = [v.decode("latin-1") for n, v in carrier if n.lower() == wanted]
        return values or None

    def keys(self, carrier: list[tuple[bytes, bytes]]) -> list[str]:
        return [n.decode("latin-1").lower() for n, _ in carrier]

    def set(self, carrier: list[tuple[bytes, bytes]], key: str, value: str) -> None:
        self.remove(carrier, key)
        carrier.append((key.encode("ascii"), value.encode("latin-1")))

    def remove(self, carrier: list[tuple[bytes, bytes]], key: str) -> None:
        wanted = key.lower().encode("ascii")
        carrier[:] = [(n, v) for n, v in carrier if n.lower() != wanted]


mapping_headers = MappingHeaders()
httpcore_headers = HttpcoreHeaders()


def host_of_url(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def apply_policy(headers: H, access: Headers[H], host: str) -> None:
    """Make ``headers`` carry what the identity policy allows for ``host`` (never raises)."""
    try:
        _apply_policy(headers, access, host)
    except Exception:  # noqa: BLE001 - the request goes out; identity fails closed below
        _telemetry.log_internal_error("http.client")
        _drop_identity(headers, access)


def _apply_policy(headers: H, access: Headers[H], host: str) -> None:
    ctx = otel_context.get_current()
    if not any(access.get(headers, field) for field in propagator_fields()):
        oi.inject(headers, access, destination=host, hop=HOP, context=ctx)
        return
    fields = baggage_fields()
    if not any(access.get(headers, field) for field in fields):
        return
    settings = oi.get_settings()
    if _egress.is_allowed(host, settings.egress_allow):
        if settings.signing_keys and state_of(ctx) is not None:
            # Plain OpenTelemetry injected unsigned identity; receivers that verify need ours.
            _replace_baggage(headers, access, fields, outgoing_context(ctx, destination=host))
        return
    # Limited like every inbound hop, so an oversize header still shows its identity members;
    # and re-encoded even when nothing was stripped: a member the propagator could not decode
    # is never forwarded to an outside destination as is.
    sent, _oversize = _propagation.extract(headers, access, frozenset(all_identity_keys()))
    span = trace.get_current_span(ctx)
    filtered = strip_for_egress(sent, host, hop=HOP, settings=settings, span=span)
    _replace_baggage(headers, access, fields, filtered)


def _replace_baggage(headers: H, access: Headers[H], fields: Iterable[str], ctx: Context) -> None:
    for field in fields:
        access.remove(headers, field)
    for field, value in encoded_baggage(ctx).items():
        access.set(headers, field, value)


def _drop_identity(headers: Any, access: Headers[Any]) -> None:
    try:
        for field in baggage_fields():
            access.remove(headers, field)
    except Exception:  # noqa: BLE001
        _telemetry.log_internal_error("http.client.drop")


# --- the wrappers (installed by HttpClientIdentityInstrumentor) ------------------------------

Wrapped = Callable[..., Any]


def wrap_requests_send(wrapped: Wrapped, instance: Any, args: Any, kwargs: Any) -> Any:
    if not is_instrumentation_enabled():
        return wrapped(*args, **kwargs)
    request = args[0] if args else kwargs.get("request")
    if request is not None and getattr(request, "headers", None) is not None:
        apply_policy(request.headers, mapping_headers, host_of_url(str(request.url)))
    token = handled.set(True)
    try:
        return wrapped(*args, **kwargs)
    finally:
        handled.reset(token)


def wrap_urllib3_request(wrapped: Wrapped, instance: Any, args: Any, kwargs: Any) -> Any:
    if handled.get() or not is_instrumentation_enabled():
        return wrapped(*args, **kwargs)
    from urllib3._collections import HTTPHeaderDict  # the same class in urllib3 1.x and 2.x

    url = args[1] if len(args) > 1 else kwargs.get("url", "")
    original = args[3] if len(args) > 3 else kwargs.get("headers")
    # urllib3 may pass the pool's shared default headers: work on a copy, never on those.
    headers = HTTPHeaderDict(original or {})
    url_text = str(url)
    host = host_of_url(url_text) if "://" in url_text else ""
    if not host:
        host = str(getattr(instance, "_tunnel_host", None) or getattr(instance, "host", ""))
    apply_policy(headers, mapping_headers, host.lower())
    if len(args) > 3:
        args = (*args[:3], headers, *args[4:])
    else:
        kwargs = {**kwargs, "headers": headers}
    return wrapped(*args, **kwargs)


def _httpcore_host(request: Any) -> str:
    host = request.url.host
    return (host.decode("ascii", "replace") if isinstance(host, bytes) else str(host)).lower()


def wrap_httpcore_request(wrapped: Wrapped, instance: Any, args: Any, kwargs: Any) -> Any:
    if is_instrumentation_enabled():
        request = args[0] if args else kwargs.get("request")
        if request is not None and isinstance(request.headers, list):
            apply_policy(request.headers, httpcore_headers, _httpcore_host(request))
    return wrapped(*args, **kwargs)


def wrap_aiohttp_send(wrapped: Wrapped, instance: Any, args: Any, kwargs: Any) -> Any:
    if is_instrumentation_enabled():
        headers = getattr(instance, "headers", None)
        if headers is not None:
            apply_policy(headers, mapping_headers, str(instance.url.host or "").lower())
    return wrapped(*args, **kwargs)
