"""The ``http.server`` hop, shared by the WSGI and the ASGI middleware.

Every request goes through the core's ``extract`` (inbound policy, limits, accounting). Three
things are specific to HTTP servers and live here:

* ``identity.missing`` waits until the response starts: an edge service authenticates the user
  *inside* the app (Flask-Login, Django, Starlette, a bearer token), so "missing" is only known
  once the app had its chance. The event still lands on the hop's server span, exactly once.
  Likewise the identity the app's authentication yielded is stamped on that server span (which
  started before it was known) and the hop counts as ``present``, when the response starts.
* OpenTelemetry's own server middleware, when it runs *inside* ours, extracts the raw headers
  again and overlays their baggage on the current context. When our policy changed the
  baggage (identity rejected, or set from the app's authentication) the headers handed on are
  rewritten from the admitted context, so the overlay cannot bring back what policy removed.
* OpenTelemetry's middleware makes a SERVER span only when no span is current. So when it runs
  inside ours, our context carries no current span (it continues the caller's trace itself);
  without it, our context continues the caller's trace so the app's spans keep their parent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.baggage import get_all
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, default_setter
from opentelemetry.trace import INVALID_SPAN, SpanKind

import otel_identity as oi
from otel_identity import instrumentation as oii
from otel_identity import names
from otel_identity.instrumentation import (
    Arriving,
    HopState,
    announce,
    identity_state,
    is_anonymous_route,
    missing_event,
)

HOP = names.HOP_HTTP_SERVER


@dataclass(frozen=True, slots=True)
class Rejected:
    """What an auth source returns for credentials that were presented but are not valid.

    ``reason`` is one of the ``identity.reject_reason`` values (``names.REASON_*``).
    """

    reason: str


AuthResult = oi.Identity | Rejected | None


class RequestView:
    """The read-only view of a request that auth sources get (same for WSGI and ASGI)."""

    __slots__ = ("_lookup", "path", "raw")

    def __init__(self, path: str, raw: object, lookup: Callable[[str], str | None]) -> None:
        self.path = path
        self.raw = raw  # the WSGI environ or the ASGI scope
        self._lookup = lookup

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        return self._lookup(name)


AuthSource = Callable[[RequestView], AuthResult]


class ServerHop(HopState):
    """The hop state of one HTTP request: holds ``identity.missing`` until the response starts.

    The span processor hands pending events to the first span started under the hop (with our
    middleware outermost, that is OpenTelemetry's server span); this class keeps that span and
    puts every event there except ``identity.missing``, which ``settle`` decides later.
    """

    __slots__ = ("accounted", "arrived", "authenticated", "route", "settled", "span", "yielded")

    def __init__(
        self, state: HopState, route: str | None, arrived: oi.Identity | None = None
    ) -> None:
        # The core's state, as this request's own (its counter key already says its outcome).
        self.hop, self.outcome, self.reason, self.key = (
            state.hop,
            state.outcome,
            state.reason,
            state.key,
        )
        self.pending = list(state.pending)
        self.route = route
        self.span: trace.Span | None = None
        self.authenticated = False
        self.settled = False
        self.accounted = False
        self.arrived = arrived  # the identity policy admitted from the request itself
        # The context holding the identity the app's own authentication yielded, if any.
        self.yielded: Context | None = None

    def account(self, identity_present: bool) -> None:
        """Count the hop once the app has answered, with the outcome it ended with.

        The core's extract left counting to us: an edge that authenticates the request itself
        must count it as ``present``, not as the ``missing`` the wire alone would say.
        """
        if self.accounted:
            return
        self.accounted = True
        outcome = self.outcome
        if identity_present or self.authenticated:
            outcome = names.OUTCOME_PRESENT
        elif outcome not in (names.OUTCOME_REJECTED, names.OUTCOME_ANONYMOUS):
            outcome = names.OUTCOME_MISSING
        if outcome != self.outcome:  # the counter key follows the outcome
            self.outcome = outcome
            self.key = oii.hop_key(self.hop, outcome, self.reason)
        oii.count_hop(self.key)

    def flush(self, span: trace.Span) -> None:
        if self.span is None:
            self.span = span
        keep: list[tuple[str, dict[str, Any]]] = []
        for name, attributes in self.pending:
            if name != names.EVENT_MISSING:
                oii.add_event(span, name, attributes)
            elif not self.settled:
                keep.append((name, attributes))  # held until the app has answered
            elif not oii.has_event(span, name):
                oii.add_event(span, name, attributes)
        self.pending = keep

    def drop_missing(self) -> None:
        self.pending = [e for e in self.pending if e[0] != names.EVENT_MISSING]

    def note_authenticated(self, ctx: Context | None = None) -> None:
        self.authenticated = True
        if ctx is not None and oi.get_identity(ctx) is not None:
            self.yielded = ctx
        self.drop_missing()

    def settle(self, identity_present: bool) -> None:
        """The app has answered: record ``identity.missing`` if it still has no identity."""
        if self.settled:
            return
        self.settled = True
        missing = [e for e in self.pending if e[0] == names.EVENT_MISSING]
        if not missing:
            return
        self.drop_missing()
        if identity_present or self.authenticated:
            return
        span = self.span
        if span is None or not span.is_recording():
            span = trace.get_current_span()
        if span.is_recording():
            if not oii.has_event(span, names.EVENT_MISSING):
                name, attributes = missing[0]
                oii.add_event(span, name, attributes)
        else:
            # No span to take it yet: the next span started under this hop does.
            self.pending.append(missing[0])


def server_hop(context: Context | None = None) -> ServerHop | None:
    state = oi.hop_state(context)
    return state if isinstance(state, ServerHop) else None


def mark_authenticated() -> None:
    """Tell the current HTTP hop that the app authenticated the request itself.

    Identity set by the app's own authentication means the hop is not missing identity, even
    if none arrived on the wire; the edge helpers (Starlette, Django) call this.
    """
    hop = server_hop()
    if hop is not None:
        hop.note_authenticated(otel_context.get_current())


R = TypeVar("R", bound="MutableMapping[str, Any]")


@dataclass(frozen=True)
class Shape(Generic[R]):
    """How a server interface hands a request over (WSGI's environ, ASGI's scope)."""

    name: str  # names the interface in the log line of an internal error
    getter: Getter[R]
    header: Callable[[R, str], str | None]  # one request header, or None
    rewrite: Callable[[R, Context], R]  # a copy whose baggage headers carry the context's
    # The request as an announcement reads it: (carrier, getter), or (header, None) where the
    # interface holds the baggage header as one string already (see ``announce``).
    announced: Callable[[R], tuple[Any, Any]]


def begin(
    request: R,
    shape: Shape[R],
    *,
    auth: Sequence[AuthSource],
    route_of: Callable[[R], str | None],
    continue_trace: bool,
) -> tuple[R, Stash | None]:
    """The start of one request's hop, shared by the WSGI and ASGI calls (see ``enter``).

    Never raises: when the start fails, the error is logged and the request is returned with
    no stash; it then runs without a hop, with no identity."""
    try:
        return enter(
            request, shape, route=route_of(request), auth=auth, continue_trace=continue_trace
        )
    except Exception:  # noqa: BLE001 - without a hop the request still runs, with no identity
        oii.log_internal_error(f"{shape.name}.admit")
        return request, None


def announce_hop(
    request: R, shape: Shape[R], route_of: Callable[[R], str | None]
) -> Arriving | None:
    """The start of a request's hop when OpenTelemetry's middleware is right inside ours: the
    hop announced for that middleware's extract, to be decided there on the request's headers
    as ours reads them (OpenTelemetry's ASGI getter decodes them as UTF-8, and backslash
    escapes where that fails). None where that extract would not decide it: a span is current
    already (the middleware then extracts nothing), or the baggage step is not ours."""
    if trace.get_current_span(oii.current_context()) is not INVALID_SPAN:
        return None
    try:
        route, read = route_of(request), shape.announced(request)
        return announce(HOP, route, account=False, adopt=ServerHop, request=read)
    except Exception:  # noqa: BLE001 - the general path still runs the hop
        oii.log_internal_error(f"{shape.name}.announce")
        return None


def enter(
    request: R,
    shape: Shape[R],
    *,
    route: str | None,
    auth: Sequence[AuthSource],
    continue_trace: bool,
) -> tuple[R, Stash]:
    """The start of a request's hop, on top of the current context: the core's extract
    (policy, limits), then the app's header-based ``auth`` sources, which read the request
    through a ``RequestView``.

    ``request`` is the environ or scope: it is returned rewritten when policy or the app's
    authentication changed the baggage, marked as handled (a mounted sub-application does not
    hop again), and, with an OpenTelemetry middleware inside (``continue_trace=False``),
    holding the stash its tap restores our context from. Runs on every request.
    """
    base = oii.current_context()
    local: Any = trace.get_current_span(base)
    inner = getattr(local, "kind", None) is SpanKind.SERVER and local.get_span_context().is_valid
    # With an OpenTelemetry server span, the sender's span is not used (that span is, or will
    # be, the hop's span): the trace context is not parsed a second time.
    own_span = inner or not continue_trace
    ctx, hop = _admit(request, shape.getter, base, route, inner=inner, own_span=own_span)
    # The hop's span is the inner middleware's server span, or (an OpenTelemetry server
    # middleware inside makes the SERVER span from the headers) whatever the base had.
    ctx = oii.hop_context(ctx, hop, span=local if own_span else None)
    changed = hop.outcome == names.OUTCOME_REJECTED
    if auth:
        original = request
        view = RequestView(route or "", original, lambda name: shape.header(original, name))
        ctx, authenticated = _authenticate(ctx, hop, auth, view)
        changed = changed or authenticated
    if inner:
        hop.flush(local)
        if hop.authenticated:
            stamp(local, ctx)
    if changed:
        request = shape.rewrite(request, ctx)
    request[HANDLED_KEY] = True
    stash = Stash(ctx, hop)
    if not continue_trace:
        request[STASH_KEY] = stash
    return request, stash


def _admit(
    request: R, getter: Getter[R], base: Context, route: str | None, *, inner: bool, own_span: bool
) -> tuple[Context, ServerHop]:
    """The core's extract of the request, not yet counted, and its hop state as a ServerHop."""
    probe = base
    if inner:
        # Without the hop's own span in the base, extract keeps every event pending, so
        # "missing" can wait for the app; an inner middleware's server span is hidden from it.
        probe = trace.set_span_in_context(INVALID_SPAN, base)
    ctx = oi.extract(
        request,
        getter,
        hop=HOP,
        context=probe,
        route=route,
        account=False,
        trace_context=not own_span,
    )
    state = oi.hop_state(ctx)
    hop = ServerHop(
        state if isinstance(state, HopState) else HopState(HOP, names.OUTCOME_MISSING),
        route,
        oi.get_identity(ctx),
    )
    return ctx, hop


def settle(hop: ServerHop, present: bool | None = None) -> None:
    """The app has answered (its response started, or it failed): count the hop with its
    final outcome and decide ``identity.missing``. Never raises into the response."""
    if hop.accounted and hop.settled:
        return  # the response started already; closing it changes nothing
    try:
        here = otel_context.get_current()
        identity = oi.get_identity(here)
        if present is None:
            present = identity is not None
        hop.account(present)
        if identity is None and hop.yielded is not None:
            # (Django's middleware, say, has detached the identity it set by now)
            here, identity = hop.yielded, oi.get_identity(hop.yielded)
        if identity is not None and identity is not hop.arrived and identity != hop.arrived:
            _stamp_server_span(hop, here)
        if hop.pending:
            hop.settle(present)  # decides a held "missing"; nothing else is pending long
        else:
            hop.settled = True
    except Exception:  # noqa: BLE001 - never break the response
        oii.log_internal_error("http settle")


def _stamp_server_span(hop: ServerHop, ctx: Context) -> None:
    """Stamp the hop's server span with the identity of ``ctx``, which the app's own
    authentication yielded during the request (Flask-Login, a Django or Starlette user, a
    JWT): that span started before the identity was known. (An identity that arrived on the
    request was put on it when it started.)"""
    span = hop.span
    if span is None or not span.is_recording():
        span = trace.get_current_span(ctx)
        if getattr(span, "kind", None) is not SpanKind.SERVER:
            return
    stamp(span, ctx)


def _authenticate(
    ctx: Context, hop: ServerHop, auth: Sequence[AuthSource], view: RequestView
) -> tuple[Context, bool]:
    for source in auth:
        try:
            result = source(view)
        except Exception as exc:  # noqa: BLE001 - an app's auth source must not break the hop
            oii.log_once(
                logging.WARNING,
                ("auth_source", type(exc).__name__),
                "otel-identity: auth source %r raised %s; request treated as unauthenticated",
                getattr(source, "__name__", type(source).__name__),
                type(exc).__name__,
            )
            continue
        if result is None:
            continue
        if isinstance(result, Rejected):
            return _reject(ctx, hop, result.reason), True
        try:
            ctx = oi.set_identity(result, context=ctx)
        except (TypeError, ValueError):
            return _reject(ctx, hop, names.REASON_MALFORMED), True
        hop.note_authenticated(ctx)
        return ctx, True
    return ctx, False


def _reject(ctx: Context, hop: ServerHop, reason: str) -> Context:
    """Credentials were presented and failed: the request runs without identity (fail closed)."""
    hop.outcome = names.OUTCOME_REJECTED
    hop.pending.append(
        (names.EVENT_REJECTED, {names.ATTR_HOP: HOP, names.ATTR_REJECT_REASON: reason})
    )
    settings = oi.get_settings()
    has_missing = any(name == names.EVENT_MISSING for name, _ in hop.pending)
    if not has_missing and HOP in settings.required_hops and not is_anonymous_route(hop.route):
        hop.pending.append(missing_event(HOP, settings))
    return oi.clear_identity(ctx)


# (id of the global propagator, all its fields, the fields that carry baggage)
_fields_cache: tuple[int, tuple[str, ...], tuple[str, ...]] = (0, (), ())


def _fields() -> tuple[tuple[str, ...], tuple[str, ...]]:
    global _fields_cache
    textmap = propagate.get_global_textmap()
    if _fields_cache[0] != id(textmap):
        probe: dict[str, str] = {}
        propagate.inject(probe, context=oii.baggage_context({"otel-identity": "1"}))
        _fields_cache = (id(textmap), tuple(sorted(textmap.fields)), tuple(probe))
    return _fields_cache[1], _fields_cache[2]


def propagator_fields() -> tuple[str, ...]:
    """Every header name the global propagator writes."""
    return _fields()[0]


def baggage_fields() -> tuple[str, ...]:
    """The header names the global propagator uses for baggage (``baggage`` for W3C)."""
    return _fields()[1]


def encoded_baggage(ctx: Context) -> dict[str, str]:
    """The baggage headers that carry exactly the baggage of ``ctx`` (global propagator)."""
    out: dict[str, str] = {}
    baggage = get_all(ctx)
    if baggage:
        oii.propagator_inject(out, oii.baggage_context(baggage), default_setter)
    return out


_OTEL_PREFIX = "opentelemetry.instrumentation."
_NEXT_ATTRS = ("__wrapped__", "app", "wsgi", "wsgi_app", "application", "middleware_stack")

# Where the outer middleware leaves the admitted context for the re-attach tap inside
# OpenTelemetry's middleware (a per-request key of the WSGI environ / ASGI scope).
STASH_KEY = "otel_identity.admitted"
# Set on the environ/scope of a request that already is a hop, so a mounted sub-application
# (itself wrapped by the instrumentor) does not count the same request twice.
HANDLED_KEY = "otel_identity.hop"


class Stash:
    """One request's hop: the admitted context and its state (also what the tap restores)."""

    __slots__ = ("context", "hop", "used")

    def __init__(self, context: Context, hop: ServerHop) -> None:
        self.context = context
        self.hop = hop
        self.used = False  # a tap attached it (and keeps it attached while the body runs)


def restored(inside: Context, stash: Stash) -> Context:
    """The context an inner OpenTelemetry middleware attached, with our identity state back.

    That middleware extracts the headers into a brand-new context (its SERVER span, the raw
    baggage): the span is kept, identity, baggage and hop state are ours again (an entry ours
    lacks is None in the result, which every reader takes as absent).
    """
    stash.used = True
    ours = stash.context
    ctx = oii.with_identity_of(inside, ours)
    span = take_server_span(stash.hop, ctx)
    if span is not None and stash.hop.authenticated:
        stamp(span, ours)
    return ctx


def take_server_span(hop: ServerHop, ctx: Context) -> trace.Span | None:
    """The recording SERVER span current in ``ctx`` (OpenTelemetry's, started before the hop
    was decided) as the hop's span: it takes the hop's pending events. None if there is none."""
    span: Any = trace.get_current_span(ctx)
    if getattr(span, "kind", None) is not SpanKind.SERVER or not span.is_recording():
        return None
    hop.span = span
    if hop.pending:
        hop.flush(span)
    return span  # type: ignore[no-any-return]


def stamp(span: trace.Span, ctx: Context) -> None:
    """Identity attributes on a server span started before the app's auth set the identity."""
    state = identity_state(ctx)
    if state is not None and span.is_recording():
        attributes = state.span_attributes(oi.get_settings().span_attributes)
        if attributes:
            span.set_attributes(attributes)


def find_otel_servers(app: object) -> list[object]:
    """The OpenTelemetry server instrumentation found inside ``app`` (best effort), outermost
    first: OpenTelemetry middleware objects, or instrumented framework applications (Flask,
    FastAPI), or a Django handler whose settings list OpenTelemetry's middleware."""
    found: list[object] = []
    seen: set[int] = set()
    todo = [app]
    while todo and len(seen) < 64:
        node = todo.pop(0)
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if _is_otel(node):
            found.append(node)
        todo.extend(getattr(node, attr, None) for attr in _NEXT_ATTRS)
        todo.append(getattr(node, "__self__", None))  # a bound method: its application
    return found


def otel_server_inside(app: object) -> bool:
    """Whether an OpenTelemetry server instrumentation runs inside ``app`` (best effort)."""
    return bool(find_otel_servers(app))


def _is_otel(node: object) -> bool:
    module = getattr(type(node), "__module__", "") or ""
    if module.startswith(_OTEL_PREFIX):
        return True
    if (getattr(node, "__module__", "") or "").startswith(_OTEL_PREFIX):
        return True  # a function made by an instrumentation (Flask's rewrapped wsgi_app)
    try:
        return _declares_otel(node, module)
    except Exception:  # noqa: BLE001 - detection is a best effort over arbitrary objects
        return False


def _declares_otel(node: object, module: str) -> bool:
    """Whether ``node`` says it is instrumented: a flag, a declared middleware, a setting."""
    if getattr(node, "_is_instrumented_by_opentelemetry", False) is True:
        return True  # Flask and FastAPI apps instrumented by OpenTelemetry
    user_middleware: Iterable[object] = getattr(node, "user_middleware", None) or ()
    for middleware in user_middleware:  # Starlette's declared middleware
        cls = getattr(middleware, "cls", None)
        if (getattr(cls, "__module__", "") or "").startswith(_OTEL_PREFIX):
            return True
    if module.startswith("django.core.handlers"):
        from django.conf import settings  # type: ignore[import-untyped]

        return any("opentelemetry" in str(m) for m in getattr(settings, "MIDDLEWARE", ()))
    return False
