"""Hop primitives: inbound policy, accounting, events, egress, signing."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from opentelemetry import baggage, context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import otel_identity as oi
from otel_identity import _counts, _egress, _signing, _telemetry, _thread_state, names

KEY_A = base64.b64encode(b"a" * 32).decode()
KEY_B = base64.b64encode(b"b" * 32).decode()


def carrier_for(**claims: object) -> dict[str, str]:
    carrier: dict[str, str] = {}
    oi.inject(carrier, context=oi.set_identity(context=Context(), **claims))  # type: ignore[arg-type]
    return carrier


def events_of(spans: InMemorySpanExporter, name: str) -> list[dict[str, object]]:
    return [
        dict(event.attributes or {})
        for span in spans.get_finished_spans()
        for event in span.events
        if event.name == name
    ]


def delta(before: dict[tuple[str, str], int], hop: str, outcome: str) -> int:
    return _telemetry.hop_counts().get((hop, outcome), 0) - before.get((hop, outcome), 0)


def test_continue_from_attaches_identity_and_restores_after() -> None:
    carrier = carrier_for(user_id="u1", tenant_id="t1")
    with oi.continue_from(carrier, hop="queue.consume") as identity:
        assert identity == oi.Identity(user_id="u1", tenant_id="t1")
        assert oi.get_identity() == identity
    assert oi.get_identity() is None


def test_extract_replaces_any_stale_identity_of_the_receiving_thread() -> None:
    with oi.use_identity(user_id="previous-job", tenant_id="other-tenant"):
        ctx = oi.extract({}, hop="queue.consume")
        assert oi.get_identity(ctx) is None


def test_extract_continues_the_senders_trace(tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("send") as span:
        carrier = {}
        oi.inject(carrier)
    ctx = oi.extract(carrier, hop="queue.consume", context=Context())
    assert trace.get_current_span(ctx).get_span_context().trace_id == (
        span.get_span_context().trace_id
    )


def test_extract_keeps_the_local_server_span_an_instrumentation_started(
    tracer: trace.Tracer,
) -> None:
    carrier = carrier_for(user_id="u")
    with tracer.start_as_current_span("server", kind=SpanKind.SERVER) as server:
        ctx = oi.extract(carrier, hop="http.server")
        assert trace.get_current_span(ctx) is server


@pytest.mark.parametrize("hop", ["http.server", "grpc.server"])
def test_extract_keeps_the_server_span_a_sampler_dropped(hop: str) -> None:
    # Under a parent-based sampler the instrumentation's server span is a NonRecordingSpan
    # (no kind): it is still the hop's own span, not a reason to read the whole carrier again
    # and continue the sender's span instead.
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    dropped = TracerProvider(sampler=ALWAYS_OFF).get_tracer("test")
    carrier = carrier_for(user_id="u")
    carrier["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
    with dropped.start_as_current_span("server", kind=SpanKind.SERVER) as server:
        assert type(server) is trace.NonRecordingSpan
        before = _telemetry.hop_counts()
        ctx = oi.extract(carrier, hop=hop)
        assert trace.get_current_span(ctx) is server
        assert oi.get_identity(ctx) == oi.Identity(user_id="u")
        assert delta(before, hop, "present") == 1


def test_a_dropped_local_span_is_not_a_consumers_own_span() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    dropped = TracerProvider(sampler=ALWAYS_OFF).get_tracer("test")
    carrier = carrier_for(user_id="u")
    carrier["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with dropped.start_as_current_span("loop"):
        ctx = oi.extract(carrier, hop="queue.consume")
        sender = trace.get_current_span(ctx).get_span_context()
        assert format(sender.span_id, "016x") == "b7ad6b7169203331"  # continues the sender


def test_the_senders_span_current_is_not_a_server_hops_own_span() -> None:
    # (a remote span made current, as OpenTelemetry's extract-and-attach leaves it, is the
    # sender's: the hop still reads the carrier and continues it)
    carrier = carrier_for(user_id="u")
    carrier["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
    remote = propagate.extract({"traceparent": carrier["traceparent"]})
    ctx = oi.extract(carrier, hop="grpc.server", context=remote)
    sender = trace.get_current_span(ctx).get_span_context()
    assert sender.is_remote and format(sender.span_id, "016x") == "b7ad6b7169203331"
    assert oi.get_identity(ctx) == oi.Identity(user_id="u")


def test_present_and_missing_hops_are_counted() -> None:
    before = _telemetry.hop_counts()
    oi.extract(carrier_for(user_id="u"), hop="grpc.server")
    oi.extract({}, hop="grpc.server")
    oi.extract({}, hop="grpc.server")
    assert delta(before, "grpc.server", "present") == 1
    assert delta(before, "grpc.server", "missing") == 2


def test_counter_is_exported_as_otel_identity_hops(metric_reader: object) -> None:
    oi.extract({}, hop="queue.consume")
    data = metric_reader.get_metrics_data()  # type: ignore[attr-defined]
    points = [
        point
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == "otel_identity.hops"
        for point in metric.data.data_points
    ]
    assert any(
        p.attributes == {"identity.hop": "queue.consume", "identity.outcome": "missing"}
        and p.value >= 1
        for p in points
    )


def test_missing_identity_on_required_hop_is_an_event_on_the_hops_first_span(
    spans: InMemorySpanExporter, tracer: trace.Tracer
) -> None:
    with oi.continue_from({}, hop="queue.consume"), tracer.start_as_current_span("handle"):
        pass
    assert events_of(spans, names.EVENT_MISSING) == [
        {"identity.hop": "queue.consume", "identity.missing_keys": ("user.id", "tenant.id")}
    ]


def test_missing_event_goes_on_the_current_hop_span_once(
    spans: InMemorySpanExporter, tracer: trace.Tracer
) -> None:
    # The server span starts first (like OTel's middleware) and records missing itself; our
    # extract inside it must not add a second one.
    with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER):
        with oi.continue_from({}, hop="http.server"):
            pass
    assert len(events_of(spans, names.EVENT_MISSING)) == 1


def test_not_required_hops_record_no_missing_event(
    spans: InMemorySpanExporter, tracer: trace.Tracer
) -> None:
    with oi.continue_from({}, hop="manual"), tracer.start_as_current_span("work"):
        pass
    assert events_of(spans, names.EVENT_MISSING) == []


def test_anonymous_routes_are_exempt_and_counted_as_anonymous(
    spans: InMemorySpanExporter, tracer: trace.Tracer
) -> None:
    oi.configure(anonymous_routes="/healthz,/public/*")
    before = _telemetry.hop_counts()
    for route in ("/healthz", "/public/logo.png"):
        with oi.continue_from({}, hop="http.server", route=route):
            with tracer.start_as_current_span("h"):
                pass
    assert events_of(spans, names.EVENT_MISSING) == []
    assert delta(before, "http.server", "anonymous") == 2


def test_strip_policy_ignores_inbound_identity_and_says_so(
    spans: InMemorySpanExporter, tracer: trace.Tracer
) -> None:
    oi.configure(inbound="strip")
    before = _telemetry.hop_counts()
    with tracer.start_as_current_span("edge", kind=SpanKind.SERVER):
        ctx = oi.extract(carrier_for(user_id="forged", tenant_id="t"), hop="http.server")
    assert oi.get_identity(ctx) is None
    assert "user.id" not in baggage.get_all(ctx)
    assert delta(before, "http.server", "rejected") == 1
    assert events_of(spans, names.EVENT_REJECTED) == [
        {"identity.hop": "http.server", "identity.reject_reason": "untrusted"}
    ]


def test_in_process_hops_are_trusted_even_under_strip() -> None:
    oi.configure(inbound="strip")
    ctx = oi.extract(carrier_for(user_id="u"), hop="process")
    assert oi.get_identity(ctx) == oi.Identity(user_id="u")


class TestSigning:
    def test_signed_identity_is_verified_on_the_receiving_hop(self) -> None:
        oi.configure(signing_keys=f"k1:{KEY_A}")
        carrier = carrier_for(user_id="u", tenant_id="t")
        assert "identity.sig=v1.k1." in carrier["baggage"]
        identity = oi.get_identity(oi.extract(carrier, hop="grpc.server"))
        assert identity == oi.Identity(user_id="u", tenant_id="t")
        assert identity is not None and identity.verified

    def test_verified_flag_reaches_span_attributes(
        self, spans: InMemorySpanExporter, tracer: trace.Tracer
    ) -> None:
        oi.configure(signing_keys=f"k1:{KEY_A}")
        with oi.continue_from(carrier_for(user_id="u"), hop="grpc.server"):
            with tracer.start_as_current_span("handler"):
                pass
        (span,) = spans.get_finished_spans()
        assert span.attributes is not None and span.attributes["identity.verified"] is True

    @pytest.mark.parametrize(
        ("tamper", "reason"),
        [
            (lambda h: h.replace("user.id=u", "user.id=admin"), "bad_signature"),
            (lambda h: h.replace("v1.k1.", "v1.k9."), "unknown_key"),
            (lambda h: h.replace("v1.k1.", "v2.k1."), "malformed"),
            (lambda h: h.split(",identity.sig")[0], "untrusted"),
        ],
    )
    def test_forged_or_unsigned_identity_is_rejected_with_a_reason(
        self, tamper: object, reason: str
    ) -> None:
        oi.configure(signing_keys=f"k1:{KEY_A}")
        carrier = carrier_for(user_id="u")
        carrier["baggage"] = tamper(carrier["baggage"])  # type: ignore[operator]
        ctx = oi.extract(carrier, hop="http.server")
        assert oi.get_identity(ctx) is None
        state = oi.hop_state(ctx)
        assert state is not None and state.reason == reason

    def test_expired_token_is_rejected(self, monkeypatch: pytest.MonkeyPatch) -> None:
        oi.configure(signing_keys=f"k1:{KEY_A}", token_ttl=60)
        carrier = carrier_for(user_id="u-expiring")
        monkeypatch.setattr(_signing, "_now_minutes", lambda: 10**9)
        state = oi.hop_state(oi.extract(carrier, hop="http.server"))
        assert state is not None and state.reason == "expired"

    def test_rotation_old_key_still_verifies_new_key_signs(self) -> None:
        oi.configure(signing_keys=f"old:{KEY_A}")
        carrier = carrier_for(user_id="u")
        oi.configure(signing_keys=f"new:{KEY_B},old:{KEY_A}")
        assert oi.get_identity(oi.extract(carrier, hop="http.server")) is not None
        assert "v1.new." in carrier_for(user_id="u")["baggage"]

    def test_unverified_baggage_set_by_plain_otel_does_not_count_under_verify(self) -> None:
        oi.configure(signing_keys=f"k1:{KEY_A}")
        ctx = baggage.set_baggage("user.id", "raw", Context())
        assert oi.get_identity(ctx) is None
        assert oi.get_identity(oi.set_identity(user_id="app", context=ctx)) is not None


class TestEgress:
    @pytest.mark.parametrize(
        "destination",
        [
            "http://127.0.0.1:8080/x",
            "10.1.2.3:50051",
            "http://[::1]:80",
            "billing",
            "billing.payments.svc",
            "api.svc.cluster.local:443",
            "db.internal",
            "printer.local",
            "localhost:5000",
            "dns:///orders.internal:443",
        ],
    )
    def test_private_destinations_receive_identity_by_default(self, destination: str) -> None:
        carrier: dict[str, str] = {}
        oi.inject(carrier, destination=destination, context=oi.set_identity(user_id="u"))
        assert "user.id=u" in carrier["baggage"]

    @pytest.mark.parametrize(
        "destination",
        ["https://api.openai.com/v1", "8.8.8.8:53", "payments.example.com", "evil.svc.example"],
    )
    def test_third_parties_receive_no_identity_and_the_removal_is_recorded(
        self, destination: str, spans: InMemorySpanExporter, tracer: trace.Tracer
    ) -> None:
        ctx = baggage.set_baggage("feature", "x", oi.set_identity(user_id="u", tenant_id="t"))
        carrier: dict[str, str] = {}
        token = context.attach(ctx)
        try:
            with tracer.start_as_current_span("call", kind=SpanKind.CLIENT):
                oi.inject(carrier, destination=destination, hop="http.client")
        finally:
            context.detach(token)
        assert carrier.get("baggage") == "feature=x"
        (event,) = events_of(spans, names.EVENT_STRIPPED)
        assert event["identity.hop"] == "http.client"
        assert event["server.address"] in destination

    def test_strip_all_baggage_when_configured(self) -> None:
        oi.configure(egress_allow="127.0.0.1", egress_strip_all_baggage=True)
        ctx = baggage.set_baggage("feature", "x", oi.set_identity(user_id="u"))
        carrier: dict[str, str] = {}
        oi.inject(carrier, destination="127.0.0.2", context=ctx)
        assert "baggage" not in carrier
        carrier = {}
        oi.inject(carrier, destination="127.0.0.1", context=ctx)
        assert "user.id=u" in carrier["baggage"]

    def test_a_decision_to_send_as_is_holds_only_for_its_destination_and_settings(self) -> None:
        ctx = oi.set_identity(user_id="u")  # one baggage mapping, sent again and again

        def sent(destination: str) -> str | None:
            carrier: dict[str, str] = {}
            oi.inject(carrier, destination=destination, context=ctx)
            return carrier.get("baggage")

        assert sent("10.0.0.1") == "user.id=u"
        assert sent("10.0.0.1") == "user.id=u"  # remembered
        assert sent("api.example.com") is None  # another destination is decided anew
        oi.configure(egress_allow="api.example.com")
        assert sent("10.0.0.1") is None  # new settings: decided anew
        assert sent("api.example.com") == "user.id=u"

    def test_egress_fails_closed_on_internal_error(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def broken(*args: object) -> bool:
            raise RuntimeError("boom")

        logged: list[str] = []
        monkeypatch.setattr(_egress, "is_allowed", broken)
        monkeypatch.setattr(_telemetry, "log_internal_error", logged.append)
        ctx = baggage.set_baggage("feature", "x", oi.set_identity(user_id="u"))
        carrier: dict[str, str] = {}
        oi.inject(carrier, destination="10.0.0.1", context=ctx)
        assert carrier["baggage"] == "feature=x"  # the call goes out, without identity
        assert logged == ["outgoing_context"]

    def test_allow_list_accepts_hosts_suffixes_and_cidrs(self) -> None:
        oi.configure(egress_allow="api.partner.com,*.corp,192.0.2.0/24")
        for destination, allowed in [
            ("api.partner.com", True),
            ("x.corp", True),
            ("192.0.2.9", True),
            ("127.0.0.1", False),
            ("corp", False),
        ]:
            carrier: dict[str, str] = {}
            oi.inject(carrier, destination=destination, context=oi.set_identity(user_id="u"))
            assert ("baggage" in carrier) is allowed, destination


def test_receive_gives_the_receiver_its_own_hop() -> None:
    captured = oi.set_identity(user_id="u")
    before = _telemetry.hop_counts()
    with oi.continue_context(captured, hop="thread") as identity:
        assert identity == oi.Identity(user_id="u")
        state = oi.hop_state()
        assert state is not None and state.hop == "thread"
    assert delta(before, "thread", "present") == 1


def test_inject_without_any_baggage_still_propagates_the_trace(tracer: trace.Tracer) -> None:
    carrier: dict[str, str] = {}
    with tracer.start_as_current_span("s"):
        oi.inject(carrier)
    assert "traceparent" in carrier and "baggage" not in carrier


def test_inject_uses_the_current_context_by_default() -> None:
    token = context.attach(oi.set_identity(user_id="cur"))
    try:
        carrier: dict[str, str] = {}
        oi.inject(carrier)
    finally:
        context.detach(token)
    assert carrier["baggage"] == "user.id=cur"


def test_a_queue_hop_inside_a_server_span_does_not_take_over_that_span(
    spans: InMemorySpanExporter, tracer: trace.Tracer
) -> None:
    with tracer.start_as_current_span("GET /drain", kind=SpanKind.SERVER) as server:
        with tracer.start_as_current_span("send"):
            carrier: dict[str, str] = {}
            oi.inject(carrier)
        ctx = oi.extract(carrier, hop="queue.consume")
        assert trace.get_current_span(ctx) is not server
        with oi.continue_from({}, hop="queue.consume"), tracer.start_as_current_span("msg"):
            pass
    by_name = {s.name: [e.name for e in s.events] for s in spans.get_finished_spans()}
    assert by_name["msg"] == ["identity.missing"]
    assert by_name["GET /drain"] == ["identity.missing"]  # its own, from the processor


def test_continue_from_can_require_identity_and_says_why_it_is_absent() -> None:
    with (
        pytest.raises(oi.MissingIdentityError),
        oi.continue_from({}, hop="queue.consume", require=True),
    ):
        pass
    oi.configure(inbound="strip")
    with pytest.raises(oi.IdentityRejectedError) as info:
        with oi.continue_from(carrier_for(user_id="u"), hop="queue.consume", require=True):
            pass
    assert info.value.reason == "untrusted"
    assert oi.get_identity() is None


def test_hop_counts_from_many_threads_add_up_also_after_the_threads_end() -> None:
    import threading

    captured = oi.set_identity(user_id="u")
    before = _telemetry.hop_counts()

    def work() -> None:
        for _ in range(100):
            oi.receive(captured, hop="thread")

    threads = [threading.Thread(target=work) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert delta(before, "thread", "present") == 2000
    assert delta(before, "thread", "present") == 2000  # reading the totals changes nothing


def test_tables_of_ended_threads_are_folded_once_the_tables_double(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Idents no live thread holds are folded into one table, with nothing lost or counted
    twice, when a new ident finds the tables doubled."""
    import threading

    before = _counts.totals()
    monkeypatch.setattr(_counts, "_tables", {1: {("thread", "present"): 3}, 2: {("x", "y"): 1}})
    monkeypatch.setattr(_counts, "_retired", dict(before))
    monkeypatch.setattr(_counts, "_fold_at", 2)  # (idents 1 and 2 are no live thread's)
    thread = threading.Thread(target=_counts.count, args=(("thread", "present"),))
    thread.start()
    thread.join()
    assert 1 not in _counts._tables and 2 not in _counts._tables
    after = _counts.totals()
    assert after[("thread", "present")] == before.get(("thread", "present"), 0) + 4
    assert after[("x", "y")] == before.get(("x", "y"), 0) + 1


def test_a_thread_per_request_leaves_nothing_behind_without_any_collection() -> None:
    """A server that starts a thread per connection (werkzeug) and no metric reader: the
    count tables stay bounded (an ended thread's ident, and its table, go to a new thread),
    and nothing of ours holds an ended thread."""
    import gc
    import threading
    import weakref

    captured = oi.set_identity(user_id="u")
    before = _telemetry.hop_counts()
    keys = set(_counts.totals())
    ended: list[weakref.ref[threading.Thread]] = []

    def hop() -> None:
        oi.receive(captured, hop="thread")
        assert _thread_state.current_handoff() is None

    for _ in range(300):
        thread = threading.Thread(target=hop)
        ended.append(weakref.ref(thread))
        thread.start()
        thread.join()
    del thread
    gc.collect()
    assert delta(before, "thread", "present") == 300
    assert set(_counts.totals()) - keys <= {("thread", "present")}  # a key, not a thread
    assert len(_counts._tables) <= 2 * threading.active_count() + 64
    assert all(ref() is None for ref in ended)  # nothing of ours holds an ended thread


_REPEATED_CASES: dict[str, Callable[[], dict[str, str]]] = {
    "present": lambda: carrier_for(user_id="u", tenant_id="t", roles=["a"]),
    "missing": dict,
    "anonymous": dict,
    "malformed": lambda: {"baggage": "user.id=%00bad,other=1"},
    "oversize": lambda: {"baggage": "user.id=" + "u" * 9000},
    "other baggage": lambda: {"baggage": "colour=blue"},
}


class TestRepeatedHeaders:
    """A hop whose span is already started decides from the baggage header alone, and
    remembers what each header means; these pin that it means exactly what the general path
    (the whole propagator, every time) says."""

    @staticmethod
    def _general_path(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
        """A global propagator the memo does not know, so the general path runs: the same
        steps plus one of no known type, or (``opaque``) a composite subclass, run whole."""
        from opentelemetry.propagators.composite import CompositePropagator
        from opentelemetry.propagators.textmap import TextMapPropagator

        class Nothing(TextMapPropagator):
            def extract(
                self, carrier: object, context: Context | None = None, getter: object = None
            ) -> Context:
                return context if context is not None else Context()

            def inject(
                self, carrier: object, context: object = None, setter: object = None
            ) -> None:
                return None

            @property
            def fields(self) -> set[str]:
                return set()

        class Opaque(CompositePropagator):
            pass

        steps = list(propagate.get_global_textmap()._propagators)  # type: ignore[attr-defined]
        textmap = Opaque(steps) if kind == "opaque" else CompositePropagator([*steps, Nothing()])
        monkeypatch.setattr(propagate, "get_global_textmap", lambda: textmap)

    @staticmethod
    def _hop(
        tracer: trace.Tracer, carrier: dict[str, str], route: str = "/x"
    ) -> tuple[object, ...]:
        with tracer.start_as_current_span("server", kind=SpanKind.SERVER) as span:
            ctx = oi.extract(carrier, hop="http.server", route=route)
        state = oi.hop_state(ctx)
        assert state is not None
        events = [(e.name, dict(e.attributes or {})) for e in span.events]  # type: ignore[attr-defined]
        return (
            oi.get_identity(ctx),
            (state.outcome, state.reason),
            dict(baggage.get_all(ctx)),
            events,
        )

    @pytest.mark.parametrize("general", ["steps", "opaque"])
    @pytest.mark.parametrize("case", sorted(_REPEATED_CASES))
    def test_the_remembered_decision_is_the_general_one(
        self, case: str, general: str, tracer: trace.Tracer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        oi.configure(anonymous_routes="/public")
        route = "/public" if case == "anonymous" else "/x"
        carrier = _REPEATED_CASES[case]()
        fast = [self._hop(tracer, carrier, route) for _ in range(2)]  # a miss, then a hit
        self._general_path(monkeypatch, general)
        assert fast[0] == fast[1] == self._hop(tracer, carrier, route)

    def test_repeats_share_the_identity_but_not_the_user_slot(self, tracer: trace.Tracer) -> None:
        from otel_identity._state import SLOT_KEY as _SLOT_KEY
        from otel_identity._state import STATE_KEY as _STATE_KEY

        carrier = carrier_for(user_id="u", tenant_id="t")
        with tracer.start_as_current_span("server", kind=SpanKind.SERVER):
            first = oi.extract(carrier, hop="grpc.server")
            second = oi.extract(dict(carrier), hop="grpc.server")
        assert first[_STATE_KEY] is second[_STATE_KEY]
        assert first[_SLOT_KEY] is not second[_SLOT_KEY]  # current_user resolves per hop
        # With no events to deliver, a hop's state is the hop kind's shared, unchanging one.
        assert oi.hop_state(first) is oi.hop_state(second)

    def test_a_settings_change_applies_to_a_header_seen_before(self, tracer: trace.Tracer) -> None:
        carrier = carrier_for(user_id="u")
        assert self._hop(tracer, carrier)[1] == ("present", None)
        oi.configure(inbound="strip")
        identity, outcome, _, _ = self._hop(tracer, carrier)
        assert identity is None and outcome == ("rejected", "untrusted")

    def test_a_verified_identity_is_checked_again_once_its_signature_expires(
        self, tracer: trace.Tracer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        oi.configure(signing_keys=f"k1:{KEY_A}", token_ttl=60)
        carrier = carrier_for(user_id="u")
        assert self._hop(tracer, carrier)[0] == oi.Identity(user_id="u", verified=True)
        monkeypatch.setattr(_signing, "_now_minutes", lambda: 10**9)
        identity, outcome, _, _ = self._hop(tracer, carrier)
        assert identity is None and outcome == ("rejected", "expired")


def test_extract_without_the_trace_context_keeps_the_base_span_and_the_identity(
    tracer: trace.Tracer,
) -> None:
    with tracer.start_as_current_span("sender"):
        carrier = carrier_for(user_id="u")
        oi.inject(carrier, context=oi.set_identity(user_id="u"))
    with tracer.start_as_current_span("local") as local:
        ctx = oi.extract(carrier, hop="http.server", trace_context=False)
    assert trace.get_current_span(ctx) is local
    assert oi.get_identity(ctx) == oi.Identity(user_id="u")
