"""The ``http.client`` side: identity on outgoing requests, and egress filtering at the transport.

Each library is patched at the last point before its headers reach the wire (urllib3's
``HTTPConnection.request``, requests' ``HTTPAdapter.send``, httpcore's connection pools under
httpx, aiohttp's ``ClientRequest.send``, ``http.client.HTTPConnection.request`` under
urllib.request), so the check runs after every instrumentation and hook has injected,
whatever their load order, and again on every redirect hop. A request is judged by every
host that reads it: the destination, and a proxy that receives the plain-HTTP request (not
one that only relays a TLS tunnel); hosts are read by ``otel_identity._egress``, as the
resolver reads them. At that point:

* nothing injected yet (no OpenTelemetry client instrumentation): ``oi.inject`` writes trace
  context and baggage through the global propagator, egress policy included;
* something injected already: it is not injected twice; for a destination outside
  ``egress_allow`` the baggage it wrote is decoded with the global propagator, identity (or all
  baggage) is removed, an ``identity.stripped`` event is recorded, and the rest re-encoded.

This runs on every request, so the common cases cost a few dict lookups, all remembered in
one policy per settings object and global propagator (a new one when either is replaced): the
egress decision per destination (a URL's scheme and authority, or a host); with W3C baggage
(the OpenTelemetry default), what a request needs per (baggage header, destination), which
includes what is left of the header for an outside destination; and, when signing, the
headers of the signed mapping last sent (until its token is renewed). Whether the context
holds an identity to sign is asked per request. A destination inside ``egress_allow`` with
baggage injected already is left untouched: no decoding, no re-encoding.
"""

from __future__ import annotations

import abc
import contextvars
import re
import sys
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.baggage import get_all
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter, TextMapPropagator, default_getter

import otel_identity as oi
from otel_identity import instrumentation as oii
from otel_identity import names
from otel_identity.instrumentation import (
    baggage_step_displaced,
    current_context,
    identity_keys,
    identity_state,
    is_baggage_step,
    is_suppressed,
    outgoing_context,
    strip_for_egress,
)
from otel_identity_http._server import baggage_fields, encoded_baggage, propagator_fields

HOP = names.HOP_HTTP_CLIENT
H = TypeVar("H")

# Set while requests' adapter sends, so urllib3 underneath does not handle the request twice.
handled: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "otel_identity_http_handled", default=False
)

_BAGGAGE = "baggage"


class Headers(Getter[H], Setter[H], Generic[H]):
    """Getter, setter and remover for one library's headers object (``set`` replaces every
    value of the name)."""

    @abc.abstractmethod
    def remove(self, carrier: H, key: str) -> None:
        """Remove every value of header ``key``."""

    @abc.abstractmethod
    def first(self, carrier: H, key: str) -> str | None:
        """The value of header ``key`` (lower case) as ``get`` gives it first, or None."""


class MappingHeaders(Headers[Any]):
    """Case-insensitive mappings: requests' CaseInsensitiveDict, urllib3's HTTPHeaderDict,
    aiohttp's CIMultiDict (all replace every value of a name on ``__setitem__``)."""

    def get(self, carrier: Any, key: str) -> list[str] | None:
        value = carrier.get(key)
        return None if value is None else [value]

    def first(self, carrier: Any, key: str) -> str | None:
        return carrier.get(key)  # type: ignore[no-any-return]

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


class RequestsHeaders(MappingHeaders):
    """requests' ``CaseInsensitiveDict``, read through its store of lower-cased names: its
    ``get`` answers a missing name by raising and catching ``KeyError``, on every request."""

    def first(self, carrier: Any, key: str) -> str | None:
        entry = carrier._store.get(key)  # key is lower case (see Headers.first)
        return None if entry is None else entry[1]  # type: ignore[no-any-return]


class Urllib3Headers(MappingHeaders):
    """urllib3's ``HTTPHeaderDict`` (or a dict): ``in`` answers a missing name without the
    ``KeyError`` that ``get`` raises and catches."""

    def first(self, carrier: Any, key: str) -> str | None:
        return carrier.get(key) if key in carrier else None  # type: ignore[no-any-return]


_ascii_names: dict[str, bytes] = {}


def _ascii_name(key: str) -> bytes:
    name = _ascii_names.get(key)
    if name is None:
        name = oii.remember(_ascii_names, key, key.lower().encode("ascii"), limit=256)
    return name


class HttpcoreHeaders(Headers[list[tuple[bytes, bytes]]]):
    """httpcore's request headers: a list of ``(name, value)`` byte pairs."""

    def get(self, carrier: list[tuple[bytes, bytes]], key: str) -> list[str] | None:
        wanted = _ascii_name(key)
        values = [v.decode("latin-1") for n, v in carrier if n.lower() == wanted]
        return values or None

    def first(self, carrier: list[tuple[bytes, bytes]], key: str) -> str | None:
        wanted = _ascii_name(key)
        for n, v in carrier:
            if n.lower() == wanted:
                return v.decode("latin-1")
        return None

    def keys(self, carrier: list[tuple[bytes, bytes]]) -> list[str]:
        return [n.decode("latin-1").lower() for n, _ in carrier]

    def set(self, carrier: list[tuple[bytes, bytes]], key: str, value: str) -> None:
        self.remove(carrier, key)
        carrier.append((key.encode("ascii"), value.encode("latin-1")))

    def remove(self, carrier: list[tuple[bytes, bytes]], key: str) -> None:
        wanted = _ascii_name(key)
        carrier[:] = [(n, v) for n, v in carrier if n.lower() != wanted]


mapping_headers = MappingHeaders()
requests_headers = RequestsHeaders()
urllib3_headers = Urllib3Headers()
httpcore_headers = HttpcoreHeaders()


# --- where a request goes ----------------------------------------------------------------------


# Everything up to the first "://" and the authority after it (up to the first /, ? or #).
_SCHEME_AND_AUTHORITY = re.compile(r".*?://[^/?#]*", re.DOTALL)


def url_destination(url: str) -> str:
    """What ``url`` is judged by: its scheme and authority (``_egress`` reads the host in it
    as the resolver does, and fails closed on an authority readers could disagree on); the
    whole of ``url`` when it has no ``://``."""
    found = _SCHEME_AND_AUTHORITY.match(url)
    return url if found is None else found.group()


def destination_of(find: Callable[..., str], *args: Any) -> str:
    """``find(*args)``, the destination a request is judged by; "" (which no allow list
    admits) when finding it fails on an object we did not expect (never raises)."""
    try:
        return find(*args)
    except Exception:  # noqa: BLE001 - the request goes out; identity fails closed
        oii.log_internal_error("http.client.destination")
        return ""


def first_outside(destinations: list[str]) -> str:
    """The destination a request is judged by: the first of those it reaches (the host, a
    proxy that reads the request) that is off the allow list, else the first."""
    if len(destinations) > 1:
        allow = oi.get_settings().egress_allow
        for destination in destinations:
            if not oii.is_allowed_destination(destination, allow):
                return destination
    return destinations[0]


def _connection_destination(connection: Any, url: Any) -> str:
    """What an ``http.client``/urllib3 connection sends a request to: the URL's host when the
    request line is absolute (through a proxy), the tunnel's host, and the host the socket
    connects to unless the request is inside a TLS tunnel that host cannot read."""
    found: list[str] = []
    url_text = url if isinstance(url, str) else str(url)
    if "://" in url_text:
        found.append(url_destination(url_text))
    tunnel = getattr(connection, "_tunnel_host", None)
    if tunnel:
        found.append(str(tunnel))
    if not (tunnel and _is_tls(connection)):
        # (urllib3 keeps the host as given, trailing dot and all, in _dns_host)
        host = getattr(connection, "_dns_host", None) or getattr(connection, "host", "")
        found.append(str(host))
    return first_outside(found) if found else ""


def _is_tls(connection: Any) -> bool:
    import http.client

    urllib3_connection = sys.modules.get("urllib3.connection")
    tls: tuple[type, ...] = (http.client.HTTPSConnection,)
    if urllib3_connection is not None:
        tls = (*tls, urllib3_connection.HTTPSConnection)
    return isinstance(connection, tls)


# --- what the global propagator and the settings decide, remembered --------------------------

# Propagators known to read and write no baggage: next to one W3C baggage propagator they leave
# the baggage header to it alone, so a header's fate is a pure function of its value.
# Bounds of the table of filtered baggage headers (whose keys are headers from elsewhere).
_FILTERED_LIMIT = 1024
_FILTERED_MAX_CHARS = 2048

_NO_BAGGAGE_MODULES = frozenset(
    {"opentelemetry.trace.propagation.tracecontext", "opentelemetry.propagators.b3"}
)


class _Policy:
    """Egress decisions under one settings object and one global propagator."""

    __slots__ = (
        "baggage_fields",
        "displaced",
        "fields",
        "filtered",
        "hand_written",
        "keep",
        "last_encoded",
        "others",
        "plans",
        "routes",
        "sent_fields",
        "settings",
        "textmap",
        "w3c",
    )

    def __init__(self, settings: oi.Settings, textmap: TextMapPropagator) -> None:
        self.settings = settings
        self.textmap = textmap
        self.displaced = baggage_step_displaced()
        # Lower case, as Headers.first wants them (header names are case-insensitive).
        self.fields = tuple(f.lower() for f in propagator_fields())
        self.sent_fields = baggage_fields()
        self.baggage_fields = tuple(f.lower() for f in self.sent_fields)
        parts = oii.propagator_steps(textmap) or ()  # (a propagator of unknown shape: none)
        w3c = [p for p in parts if is_baggage_step(p)]
        others = [p for p in parts if not is_baggage_step(p)]
        # Baggage is W3C's alone: a header's fate outside egress_allow depends on its value only.
        self.w3c = (
            len(w3c) == 1
            and self.baggage_fields == (_BAGGAGE,)
            and all(type(p).__module__ in _NO_BAGGAGE_MODULES for p in others)
        )
        self.others = tuple(f for f in self.fields if f != _BAGGAGE)
        # Where no step of the textmap writes a W3C baggage header, one in a request was
        # written by hand: it is W3C baggage by its name, and OpenTelemetry's own W3C step
        # decodes and re-encodes it (what that step cannot decode does not go out).
        self.hand_written = None if _BAGGAGE in self.baggage_fields else W3CBaggagePropagator()
        self.keep = frozenset(identity_keys())
        self.routes: dict[str, tuple[bool, str]] = {}  # host -> (allowed, server.address)
        # a W3C baggage header -> (the header to send outside egress_allow, identity removed)
        self.filtered: dict[str, tuple[str | None, bool]] = {}
        # (a W3C baggage header, a destination) -> what a request carrying it there needs
        self.plans: dict[tuple[str, str], Plan | None] = {}
        # (the items of the baggage last signed for a request, its headers)
        self.last_encoded: tuple[tuple[tuple[str, object], ...], dict[str, str]] = ((), {})

    def route(self, destination: str) -> tuple[bool, str]:
        """(whether identity may go to ``destination``, its ``server.address``), remembered."""
        verdict = self.routes.get(destination)
        if verdict is None:
            allowed, address = oii.judge_destination(destination, self.settings.egress_allow)
            # (a policy is made per global textmap: one that displaced ours sends identity
            # nowhere)
            verdict = oii.remember(
                self.routes, destination, (allowed and not self.displaced, address)
            )
        return verdict

    def filter(self, header: str, host: str) -> tuple[str | None, bool]:
        """What of ``header`` may go outside ``egress_allow``, and whether identity was removed.

        Exactly the general path (the global propagator decodes, ``strip_for_egress`` removes,
        the propagator re-encodes; OpenTelemetry's W3C step, for a header written by hand
        where no step of the textmap writes one) run once per header value; the event is left
        to the caller.
        """
        found = self.filtered.get(header)
        if found is None:
            sent = self._decoded(header)
            kept = strip_for_egress(sent, host, hop=HOP, settings=self.settings, record=False)
            # Stripped means identity was there to remove (not merely other baggage).
            found = (self._encoded(kept), not self.keep.isdisjoint(get_all(sent)))
            if len(header) <= _FILTERED_MAX_CHARS:  # identity baggage is short; floods are not
                oii.remember(self.filtered, header, found, limit=_FILTERED_LIMIT)
        return found

    def _decoded(self, header: str) -> Context:
        """``header``'s baggage, limited as every inbound hop's (see ``filter``)."""
        if self.hand_written is not None:
            return self.hand_written.extract({_BAGGAGE: header}, context=Context())
        sent, _oversize = oii.propagator_extract({_BAGGAGE: header}, default_getter, self.keep)
        return sent

    def _encoded(self, ctx: Context) -> str | None:
        """The baggage header of ``ctx`` (None for no baggage), as ``_decoded`` reads it."""
        if self.hand_written is not None:
            carrier: dict[str, str] = {}
            self.hand_written.inject(carrier, context=ctx)
            return carrier.get(_BAGGAGE)
        return encoded_baggage(ctx).get(_BAGGAGE)

    def plan(self, header: str, host: str) -> Plan | None:
        """``_plan_for_host`` for the W3C baggage ``header`` going to ``host``, remembered in
        ``plans``: it depends on nothing else under this policy (whether the context holds an
        identity to sign is asked when the plan is carried out)."""
        plan: Plan | None = self.plans.get((header, host), _UNDECIDED)
        if plan is _UNDECIDED:
            plan = _plan_for_host(self, header, host)
            if len(header) <= _FILTERED_MAX_CHARS:  # (as self.filtered: floods are not kept)
                oii.remember(self.plans, (header, host), plan, limit=_FILTERED_LIMIT)
        return plan

    def encoded(self, ctx: Context) -> dict[str, str]:
        """``encoded_baggage(ctx)``, remembered for the baggage items last encoded: the
        requests of a context send one signed mapping until its token is renewed (W3C
        baggage only, whose header is a function of the items, in order)."""
        items = tuple(get_all(ctx).items())
        last, headers = self.last_encoded
        if items != last or not self.w3c:
            headers = encoded_baggage(ctx)
            self.last_encoded = (items, headers)
        return headers


_policy: _Policy | None = None


def current_policy() -> _Policy:
    """The policy for the settings and the global propagator in force (a new one when either
    was replaced: everything it remembered was decided under the old ones)."""
    policy = _policy
    if (
        policy is None
        or policy.settings is not oii.current_settings()
        or policy.textmap is not propagate.get_global_textmap()
    ):
        policy = _new_policy()
    return policy


def _new_policy() -> _Policy:
    global _policy
    _policy = policy = _Policy(oii.current_settings(), propagate.get_global_textmap())
    return policy


# --- the policy on one request -----------------------------------------------------------------

# What a request's headers need (None: nothing at all).
_INJECT = 0  # (_INJECT,): nothing injected yet, inject everything
_SIGN = 1  # (_SIGN,): allowed; replace OpenTelemetry's unsigned baggage with signed baggage
_SEND = 2  # (_SEND, header or None, stripped, address, plan first or None): outside; send
# this baggage header (after carrying out the plan the textmap's own headers need)
_FILTER = 3  # (_FILTER,): outside, a propagator of unknown shape: decode, strip, re-encode
_DROP = 4  # (_DROP,): deciding failed; send no baggage (identity fails closed)
Plan = tuple[Any, ...]
_UNDECIDED: Any = object()  # (a plan not decided yet; None is a plan: nothing to do)
_SIGN_PLAN: Plan = (_SIGN,)


def plan_policy(headers: H, access: Headers[H], host: str) -> Plan | None:
    """What ``headers`` need to carry what the identity policy allows for ``host``.

    Reads ``headers`` only; None when they are right as they are (the common case: a
    destination inside ``egress_allow`` and OpenTelemetry's baggage injected already)."""
    policy = current_policy()
    if policy.w3c:
        header = access.first(headers, _BAGGAGE)
        if header is not None:
            return policy.plan(header, host)
        # nothing injected yet, or injected already without baggage
        injected = any(access.first(headers, field) is not None for field in policy.others)
        return None if injected else (_INJECT,)
    plan = _plan_for_shapes(policy, headers, access, host)
    if policy.hand_written is not None:
        header = access.first(headers, _BAGGAGE)
        if header is not None:
            allowed, address = policy.route(host)
            if not allowed:
                out, stripped = policy.filter(header, host)
                return (_SEND, out, stripped, address, plan)
    return plan


def _plan_for_shapes(policy: _Policy, headers: H, access: Headers[H], host: str) -> Plan | None:
    """``plan_policy`` for a textmap whose baggage is not W3C's alone (another shape, or no
    baggage step at all)."""
    if all(access.first(headers, field) is None for field in policy.fields):
        return (_INJECT,)
    if all(access.first(headers, field) is None for field in policy.baggage_fields):
        return None
    return _plan_for_host(policy, None, host)


def _plan_for_host(policy: _Policy, header: str | None, host: str) -> Plan | None:
    """What injected headers need for ``host``: nothing, or signing when keys are configured,
    inside ``egress_allow``; the W3C baggage ``header`` stripped (or, for another shape,
    decoded and stripped) outside. Depends on ``policy``, ``header`` and ``host`` only
    (see ``nothing_to_sign``)."""
    route = policy.route(host)
    if route[0]:
        return _SIGN_PLAN if policy.settings.has_keys else None
    if header is None:
        return (_FILTER,)
    out, stripped = policy.filter(header, host)
    return (_SEND, out, stripped, route[1], None)


def carry_out(plan: Plan, headers: H, access: Headers[H], host: str) -> None:
    """Change ``headers`` as ``plan_policy`` found they need."""
    kind = plan[0]
    if kind == _SEND:
        _kind, out, stripped, address, first = plan
        if first is not None:  # what the propagator's own headers need, before
            carry_out(first, headers, access, host)
        if stripped:
            oii.record_stripped(trace.get_current_span(), HOP, address)
        # Set even when unchanged: every value of the header goes, not just the one decoded.
        if out is None:
            access.remove(headers, _BAGGAGE)
        else:
            access.set(headers, _BAGGAGE, out)
        return
    ctx = otel_context.get_current()
    if kind == _INJECT:
        oi.inject(headers, access, destination=host, hop=HOP, context=ctx)
    elif kind == _SIGN:  # plain OpenTelemetry injected unsigned identity; verifiers need ours
        if not nothing_to_sign(plan):
            _sign(headers, access, host, ctx)
    elif kind == _FILTER:
        _filter(headers, access, host, ctx)
    else:
        _drop_identity(headers, access)


def nothing_to_sign(plan: Plan) -> bool:
    """Whether ``plan`` signs the baggage of a context that holds no identity: then the
    headers stay as they are."""
    return plan is _SIGN_PLAN and identity_state(otel_context.get_current()) is None


def apply_policy(headers: H, access: Headers[H], host: str) -> None:
    """Make ``headers`` carry what the identity policy allows for ``host`` (never raises)."""
    try:
        plan = plan_policy(headers, access, host)
    except Exception:  # noqa: BLE001 - the request goes out; identity fails closed below
        oii.log_internal_error("http.client")
        plan = (_DROP,)
    if plan is not None:
        _carry_out_safely(plan, headers, access, host)


def _carry_out_safely(plan: Plan, headers: H, access: Headers[H], host: str) -> None:
    try:
        carry_out(plan, headers, access, host)
    except Exception:  # noqa: BLE001 - the request goes out; identity fails closed below
        oii.log_internal_error("http.client")
        _drop_identity(headers, access)


def _sign(headers: H, access: Headers[H], host: str, ctx: Context) -> None:
    """Replace the baggage headers by those of the context as it leaves for ``host``
    (``outgoing_context`` signs it, and says when a token is due for renewal)."""
    policy = current_policy()
    outgoing = outgoing_context(ctx, destination=host)
    _replace_baggage(headers, access, policy.sent_fields, policy.encoded(outgoing))


def _filter(headers: H, access: Headers[H], host: str, ctx: Context) -> None:
    # Limited like every inbound hop, so an oversize header still shows its identity members;
    # and re-encoded even when nothing was stripped: a member the propagator could not decode
    # is never forwarded to an outside destination as is.
    sent, _oversize = oii.propagator_extract(headers, access, frozenset(identity_keys()))
    span = trace.get_current_span(ctx)
    filtered = strip_for_egress(sent, host, hop=HOP, span=span)
    _replace_baggage(headers, access, baggage_fields(), encoded_baggage(filtered))


def _replace_baggage(
    headers: H, access: Headers[H], fields: Iterable[str], encoded: dict[str, str]
) -> None:
    """Make the baggage ``fields`` of ``headers`` hold ``encoded`` and nothing else (``set``
    replaces every value of a name, so only a field ``encoded`` leaves out is removed)."""
    for field in fields:
        if field not in encoded:
            access.remove(headers, field)
    for field, value in encoded.items():
        access.set(headers, field, value)


def _drop_identity(headers: Any, access: Headers[Any]) -> None:
    try:
        for field in baggage_fields():
            access.remove(headers, field)
    except Exception:  # noqa: BLE001
        oii.log_internal_error("http.client.drop")


# --- the wrappers (installed by HttpClientIdentityInstrumentor) ------------------------------

Wrapped = Callable[..., Any]


_requests_dict: type | None = None


def _case_insensitive_dict() -> type:
    """requests' ``CaseInsensitiveDict``, if ``RequestsHeaders`` can read it (else a type no
    headers object has, so they are read as any mapping)."""
    global _requests_dict
    found = _requests_dict
    if found is None:
        from requests.structures import CaseInsensitiveDict

        try:  # its private store, as RequestsHeaders reads it
            readable = requests_headers.first(CaseInsensitiveDict({"Baggage": "x"}), _BAGGAGE)
        except Exception:  # noqa: BLE001 - another requests: read it as any mapping
            readable = None
        found = _requests_dict = CaseInsensitiveDict if readable == "x" else _Unreadable
    return found


class _Unreadable:
    pass


def requests_destination(url: Any, kwargs: Any) -> str:
    """Where requests sends ``url`` (a ``PreparedRequest``'s): its destination, or a proxy's
    that reads the request (never raises)."""
    proxies = kwargs.get("proxies")
    if proxies or type(url) is not str:
        return destination_of(_proxied_destination, url, proxies)
    return url_destination(url)  # (reading a str this way cannot fail)


def _proxied_destination(url: Any, proxies: Any) -> str:
    """The URL, and the proxy when it reads the request (a plain ``http://`` URL)."""
    text = str(url)
    destination = url_destination(text)
    if proxies and text[:5].lower() == "http:":
        from requests.utils import select_proxy

        proxy = select_proxy(text, proxies)
        if proxy:
            return first_outside([destination, url_destination(proxy)])
    return destination


def wrap_requests_send(wrapped: Wrapped, instance: Any, args: Any, kwargs: Any) -> Any:
    if not is_suppressed(current_context()):
        request = args[0] if args else kwargs.get("request")
        headers = getattr(request, "headers", None)
        if headers is not None:
            host = requests_destination(request.url, kwargs)
            if type(headers) is (_requests_dict or _case_insensitive_dict()):
                apply_policy(headers, requests_headers, host)
            else:
                apply_policy(headers, mapping_headers, host)
    # urllib3 underneath: decided here, once.
    token = handled.set(True)
    try:
        return wrapped(*args, **kwargs)
    finally:
        handled.reset(token)


def _urllib3_view(original: Any) -> Any:
    """``original`` headers as a case-insensitive mapping to read (a copy only when needed)."""
    from urllib3._collections import HTTPHeaderDict  # the same class in urllib3 1.x and 2.x

    if original is None:
        return {}
    if isinstance(original, HTTPHeaderDict):
        return original
    if type(original) is dict:
        lowered = {str(k).lower(): v for k, v in original.items()}
        if len(lowered) == len(original):  # no name twice in different case
            return lowered
    return HTTPHeaderDict(original)


def _connection_request(wrapped: Wrapped, instance: Any, args: Any, kwargs: Any) -> Any:
    """``request(method, url, body, headers, ...)`` of an ``http.client``/urllib3 connection:
    the last point where the headers are one object, after every instrumentation."""
    from urllib3._collections import HTTPHeaderDict

    url = args[1] if len(args) > 1 else kwargs.get("url", "")
    original = args[3] if len(args) > 3 else kwargs.get("headers")
    host = destination_of(_connection_destination, instance, url)
    try:
        plan = plan_policy(_urllib3_view(original), urllib3_headers, host)
    except Exception:  # noqa: BLE001 - the request goes out; identity fails closed below
        oii.log_internal_error("http.client")
        plan = (_DROP,)
    if plan is not None and not nothing_to_sign(plan):
        # urllib3 may pass the pool's shared default headers: change a copy, never those.
        changed = HTTPHeaderDict(original or {})
        _carry_out_safely(plan, changed, mapping_headers, host)
        headers: Any = changed
        if not isinstance(original, HTTPHeaderDict):
            headers = dict(changed.items())  # a plain dict, as http.client expects
        if len(args) > 3:
            args = (*args[:3], headers, *args[4:])
        else:
            kwargs = {**kwargs, "headers": headers}
    # urllib3 1.x hands its request on to http.client's: decided once, here.
    token = handled.set(True)
    try:
        return wrapped(*args, **kwargs)
    finally:
        handled.reset(token)


def wrap_urllib3_request(wrapped: Wrapped, instance: Any, args: Any, kwargs: Any) -> Any:
    if handled.get() or is_suppressed(current_context()):
        return wrapped(*args, **kwargs)
    return _connection_request(wrapped, instance, args, kwargs)


def wrap_http_client_request(wrapped: Wrapped, instance: Any, args: Any, kwargs: Any) -> Any:
    """``http.client.HTTPConnection.request``: urllib.request (every redirect hop too) and
    direct ``http.client`` use. (urllib3 has its own ``request``, wrapped on its own.)"""
    if handled.get() or is_suppressed(current_context()):
        return wrapped(*args, **kwargs)
    return _connection_request(wrapped, instance, args, kwargs)


def _text(value: Any) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def _httpcore_destination(pool: Any, request: Any) -> str:
    """The request's host, and a forwarding proxy's (one that reads plain HTTP requests)."""
    url = request.url
    host = _text(url.host)
    destination = f"[{host}]" if ":" in host and not host.startswith("[") else host
    proxy = getattr(pool, "_proxy_url", None)
    if proxy is not None and _text(url.scheme).lower() == "http":
        return first_outside([destination, _text(proxy.host)])
    return destination


def wrap_httpcore_request(wrapped: Wrapped, instance: Any, args: Any, kwargs: Any) -> Any:
    if not is_suppressed(current_context()):
        request = args[0] if args else kwargs.get("request")
        if request is not None and isinstance(request.headers, list):
            host = destination_of(_httpcore_destination, instance, request)
            apply_policy(request.headers, httpcore_headers, host)
    return wrapped(*args, **kwargs)


def wrap_aiohttp_send(wrapped: Wrapped, instance: Any, args: Any, kwargs: Any) -> Any:
    if not is_suppressed(current_context()):
        headers = getattr(instance, "headers", None)
        if headers is not None:
            apply_policy(headers, mapping_headers, destination_of(_aiohttp_destination, instance))
    return wrapped(*args, **kwargs)


def _aiohttp_destination(request: Any) -> str:
    """The host aiohttp connects to (its encoded form), and a proxy that reads the request."""
    url = request.url
    host = str(url.raw_host or "")
    destination = f"[{host}]" if ":" in host else host
    proxy = getattr(request, "proxy", None)
    if proxy is not None and str(url.scheme).lower() == "http":
        return first_outside([destination, str(proxy.raw_host or "")])
    return destination
