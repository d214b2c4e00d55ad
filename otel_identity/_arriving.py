"""A receiving hop decided inside OpenTelemetry's own pass: announced, then decided there.

    marker = announce("grpc.server", "/shop.Orders/Get")   # before OpenTelemetry's extract
    ...                                                     # its extract decides the hop
    if marker is not None and marker.decided(current_context()):
        handler()                                           # the hop's context is current

Where OpenTelemetry's own server instrumentation extracts the request and attaches the result
(its gRPC interceptors, its WSGI middleware), that pass can carry the identity: no second read
of the headers, no second decode, no second attach. Neither its getter nor its carrier says
which hop it reads, so the transport's server hook *announces* the hop (kind, route) before
that extract runs, in a ContextVar the extract sees. ``IdentityBaggagePropagator``, the
global textmap's baggage step once ``IdentityInstrumentor`` ran, finds the open announcement
and decides the hop right there (``Arriving.decide``): the same ``Arrival`` as ``extract``
(members, policy verdict, events), counted by the same step (``settled``), with a user slot of
its own, so ``current_user`` is still resolved once per hop, in the hop's thread.
OpenTelemetry attaches that context and starts its server span from it; the span processor
hands the hop's pending events to that span. Sampling plays no part: the hop is counted in
the extract, whether or not any span records.

The first extract that sees the announcement takes it; later ones (a message read inside the
handler) are ordinary extracts. Nothing is announced where the textmap's baggage step is not
ours: the hook then does the whole hop itself, as wherever no such pass runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter

from otel_identity import _baggage, _config, _propagation, _telemetry
from otel_identity._baggage_propagator import arriving, baggage_step_status
from otel_identity._hop_state import HopState
from otel_identity._identity import Identity
from otel_identity._receiving import arrival_for, arrived_context, settled
from otel_identity._runtime import current_context
from otel_identity._state import ANNOUNCEMENT_KEY, without_identity

# (the core's hop state, the route, the identity admitted from the request) -> the
# transport's own hop state (an HTTP hop that settles once the app has answered, say).
Adopt = Callable[[HopState, str | None, Identity | None], HopState]
# A request as the hook reads it: its carrier and the hook's own getter for it; or, as
# (header, None), the baggage header the hook read from it already (several header lines
# joined with ",", as a getter's list of them is; "" for none).
Request = tuple[Any, Getter[Any] | None]


class Announcer(NamedTuple):
    """The constant part of announcing a receiving hop: its kind, route, accounting and
    adoption (see ``Arriving``), made once (a gRPC server makes one per method); each call,
    ``announcer(request)``, announces one request as ``announce`` does.

        announcer = Announcer("grpc.server", "/shop.Orders/Get")   # once per method
        marker = announcer((metadata, getter))                     # per request
    """

    hop: str
    route: str | None
    account: bool = True
    adopt: Adopt | None = None

    def __call__(self, request: Request | None = None) -> Arriving | None:
        """Announce the hop of one request (see ``announce``); None, announcing nothing,
        where the global textmap's baggage step is not ours."""
        if not textmap_decides():
            return None
        return Arriving(self, request)


class Arriving:
    """A receiving hop announced before its request is extracted (see ``announce``).

    ``announcer`` holds what every request of the hop shares (``hop``, ``route``, and:
    ``account=False`` leaves counting to the hook, which learns the final outcome later, an
    HTTP hop once the app answered; ``adopt`` makes the transport's own hop state from the
    core's); ``request`` is the request as the hook reads it (see ``announce``). ``state`` is
    the hop's state once an extract decided it.
    """

    __slots__ = ("announcer", "open", "previous", "request", "state")

    def __init__(self, announcer: Announcer, request: Request | None) -> None:
        """Made by announcing (``Announcer``, ``announce``): the new marker is the open
        announcement of the current context from then on."""
        self.announcer = announcer
        self.request = request
        self.open = True  # until an extract decides the hop, or the hook does it itself
        self.state: HopState | None = None
        # What ``withdraw`` puts back, the announcement this one hides. (Not the
        # ``ContextVar.set`` token: that holds the Context, which holds this marker, a cycle
        # per request that only the collector frees.)
        self.previous = arriving.get()
        arriving.set(self)

    @property
    def hop(self) -> str:
        return self.announcer.hop

    @property
    def route(self) -> str | None:
        return self.announcer.route

    @property
    def account(self) -> bool:
        return self.announcer.account

    @property
    def adopt(self) -> Adopt | None:
        return self.announcer.adopt

    def decide(
        self, base: Context, carrier: Any = None, getter: Getter[Any] | None = None
    ) -> Context:
        """``base`` (what the textmap's other steps extracted) as this hop's context; closes
        the announcement. The baggage is read from the announced ``request``, else from
        ``carrier`` through ``getter`` (the extracting instrumentation's). Never raises: on an
        internal error the result carries no identity (fail closed), as ``extract``'s."""
        self.open = False
        try:
            hop, route, account, adopt = self.announcer
            settings = _config.current or _config.get_settings()
            arrival = arrival_for(self._header(carrier, getter), hop, settings)
            state = settled(arrival, hop, route, None, account=account)
            if adopt is not None:
                admitted = arrival.state
                state = adopt(state, route, admitted.identity if admitted else None)
            self.state = state
            return arrived_context(base, arrival, state, announcement=self)
        except Exception:  # noqa: BLE001 - never break the host's request path
            _telemetry.log_internal_error("extract (announced hop)")
            return without_identity(base)

    def _header(self, carrier: Any, getter: Getter[Any] | None) -> str | None:
        """The request's baggage header (several values joined), read once."""
        if self.request is not None:
            (carrier, getter), self.request = self.request, None  # (the request is not kept)
            if getter is None:  # (header, None): the header, as the transport read it
                return carrier or None
        if getter is None:
            return None
        return _propagation.joined(getter.get(carrier, _baggage.HEADER))

    def decided(self, ctx: Context) -> bool:
        """Whether ``ctx`` is (or descends from) the context an extract decided this hop in:
        the hook has nothing left to do but run the handler."""
        return ctx.get(ANNOUNCEMENT_KEY) is self

    @property
    def counted(self) -> bool:
        """Whether an extract decided, and counted, this hop (its context may not be current:
        an extract whose result was not attached)."""
        return self.state is not None and self.announcer.account

    def close(self) -> None:
        """No extract takes this hop from now on: the hook decides it itself."""
        self.open = False


# (a global textmap, whether its baggage step is ours): asked on every announcement.
_decides: tuple[object, bool] = (None, False)


def textmap_decides() -> bool:
    """Whether the global textmap's baggage step is ours, the one that decides an announced
    hop (remembered for the last textmap asked about, so a swap is seen on the next call)."""
    global _decides
    textmap = propagate.get_global_textmap()
    known, ours = _decides
    if known is not textmap:
        ours = baggage_step_status(textmap) == "ours"
        _decides = (textmap, ours)
    return ours


def announce(
    hop: str,
    route: str | None,
    *,
    account: bool = True,
    adopt: Adopt | None = None,
    request: Request | None = None,
) -> Arriving | None:
    """Announce the receiving ``hop`` that the next extract in this context reads (see the
    module); None, announcing nothing, where the global textmap's baggage step is not ours.

    ``request`` (carrier, getter), or (header, None) with the baggage header the transport read
    from it (several lines joined with ",", "" for none): the hop's baggage is read from it, as
    the transport reads it, whatever the extracting instrumentation made of the headers
    (OpenTelemetry's gRPC interceptor keeps only the last of several baggage entries; its
    ASGI getter decodes UTF-8, and backslash escapes where that fails): the hop is then
    decided on exactly the bytes ``extract`` would read. The announcement lives as long as
    the current ``contextvars.Context``: a hook whose context outlives the request (a
    server's worker thread, an ASGI server's task) ends it with ``withdraw``."""
    return Announcer(hop, route, account, adopt)(request)


def withdraw(marker: Arriving) -> None:
    """End ``marker``'s announcement (in the thread or task, and context, that made it).
    Never raises: in any other context the closed announcement is left where it is, inert."""
    marker.open = False
    if arriving.get() is marker:
        arriving.set(marker.previous)


def decided_context(hop: str) -> Context | None:
    """The current context, where an extract decided in it the ``hop`` hop announced in this
    context (``announced(hop).decided(ctx)``): the hook has nothing left to do but run the
    handler. Else None."""
    ctx = current_context()
    marker: Arriving | None = ctx.get(ANNOUNCEMENT_KEY)  # type: ignore[assignment]
    if marker is not None and marker.announcer.hop == hop and marker is arriving.get():
        return ctx
    return None


def announced(hop: str) -> Arriving | None:
    """The ``hop`` hop announced in this context, decided or not; None if there is none."""
    marker = arriving.get()
    return marker if isinstance(marker, Arriving) and marker.announcer.hop == hop else None
