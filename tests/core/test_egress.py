"""Egress decisions: every host a destination may reach, read as the resolver reads it.

The spellings of each class (numeric IPv4 forms, IDNA dots, trailing dots, percent-encoding,
userinfo, IPv6 forms, case, gRPC targets with several addresses) are tried in tables and,
where a class is open-ended, with generated inputs.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer

import otel_identity as oi
from otel_identity import _egress, names
from otel_identity._config import DEFAULT_EGRESS_ALLOW

DEFAULT = DEFAULT_EGRESS_ALLOW


@pytest.mark.parametrize(
    ("destination", "address"),
    [
        # inet_aton forms: decimal, hex, octal, 1 to 4 parts
        ("http://134744072/", "8.8.8.8"),
        ("http://0x08080808/", "8.8.8.8"),
        ("http://0X8080808/", "8.8.8.8"),
        ("http://010.010.010.010/", "8.8.8.8"),
        ("http://8.526344/", "8.8.8.8"),
        ("http://8.8.2056/", "8.8.8.8"),
        ("http://0x8.0x8.0x8.0x8/", "8.8.8.8"),
        ("http://134744072./", "8.8.8.8"),
        ("134744072:80", "8.8.8.8"),
        ("134744072", "8.8.8.8"),
        # IDNA dots, fullwidth letters and digits, percent-encoding, case
        ("http://evil\u3002com/", "evil.com"),
        ("http://evil\uff0ecom/", "evil.com"),
        ("http://evil\uff61com/", "evil.com"),
        ("http://\uff45\uff56\uff49\uff4c\u3002com/", "evil.com"),
        ("http://\uff18.\uff18.\uff18.\uff18/", "8.8.8.8"),
        ("http://%65vil.com/", "evil.com"),
        ("http://evil%E3%80%82com/", "evil.com"),
        ("HTTP://EVIL.COM/", "evil.com"),
        # a trailing dot is the same name; one label with a dot is a top-level name
        ("http://evil.com./", "evil.com"),
        ("http://ai./", "ai"),
        # userinfo never decides the host
        ("http://billing.svc@evil.com/", "evil.com"),
        ("http://billing.svc:pw@evil.com:80/", "evil.com"),
        # IPv6: brackets, zone ids, IPv4-mapped
        ("http://[::ffff:8.8.8.8]/", "8.8.8.8"),
        ("http://[::ffff:808:808]:80/", "8.8.8.8"),
        ("http://[2001:4860:4860::8888]/", "2001:4860:4860::8888"),
        ("2001:4860:4860::8888", "2001:4860:4860::8888"),
        # gRPC targets
        ("dns:///evil.com:443", "evil.com"),
        ("dns://10.0.0.1/evil.com:443", "evil.com"),
        ("dns:evil.com", "evil.com"),
        ("dns:///%65vil.com:443", "evil.com"),
        ("ipv4:127.0.0.1:1,8.8.8.8:2", "8.8.8.8"),
        ("ipv4:10.0.0.1:1,10.0.0.2:1,134744072:1", "8.8.8.8"),
        ("ipv6:[::1]:1,[2001:4860:4860::8888]:2", "2001:4860:4860::8888"),
        ("ipv6:::1,2001:4860:4860::8888", "2001:4860:4860::8888"),
        ("evil.com:443", "evil.com"),
        ("kafka-1:9092,evil.com:9092", "evil.com"),
    ],
)
def test_a_public_host_in_any_spelling_is_outside_the_default_list(
    destination: str, address: str
) -> None:
    assert _egress.judge(destination, DEFAULT) == (False, address)
    assert not _egress.is_allowed(destination, DEFAULT)


@pytest.mark.parametrize(
    ("destination", "address"),
    [
        ("http://2130706433/", "127.0.0.1"),
        ("http://0x7f000001/", "127.0.0.1"),
        ("http://0177.0.0.1/", "127.0.0.1"),
        ("http://127.1/", "127.0.0.1"),
        ("http://billing/", "billing"),
        ("http://BILLING:8080/x", "billing"),
        ("http://billing.svc./", "billing.svc"),
        ("http://billing\u3002svc/", "billing.svc"),
        ("http://api.default.svc.cluster.local/", "api.default.svc.cluster.local"),
        ("http://evil.com@billing.svc/", "billing.svc"),
        ("http://%62illing.internal/", "billing.internal"),
        ("http://[::1]:8080/", "::1"),
        ("http://[fe80::1%25eth0]/", "fe80::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("http://[::ffff:10.1.2.3]/", "10.1.2.3"),
        ("ipv4:127.0.0.1:1,10.0.0.2:2", "127.0.0.1"),
        ("ipv6:[::1]:1,[fd00::1]:2", "::1"),
        ("dns:///billing.svc:50051", "billing.svc"),
        ("unix:/run/app.sock", "localhost"),
        ("unix-abstract:app", "localhost"),
        ("localhost:50051", "localhost"),
        ("billing.svc:8080", "billing.svc"),
        ("kafka-1:9092,kafka-2.internal:9092", "kafka-1"),
        ("http://billing.svc/a path?q=x y\t", "billing.svc"),  # the path never decides
    ],
)
def test_a_private_host_in_any_spelling_is_inside_the_default_list(
    destination: str, address: str
) -> None:
    assert _egress.judge(destination, DEFAULT) == (True, address)


@pytest.mark.parametrize(
    "destination",
    [
        "",
        "http:///",
        "http://a@b@billing/",  # readers disagree on which @ ends the userinfo
        "http://evil.com\\@billing/",  # a backslash is a slash to WHATWG readers
        "http://bill ing/",
        "http://billing\t/",
        "http://bil\x00ling/",
        "http://billing:80x/",
        "http://[::1/",
        "http://[v1.fe]/",
        "http://999999999999/",  # a number out of range reaches no address we can judge
        "http://1.2.3.4.5/",
        "http://08.0.0.1/",
        "http://256.0.0.1/",
        "http://a..b/",
        "http://.billing/",
        "http://billing../",
        "http://%zzbilling/",
        "http://%2562illing/",
        "http://bil%00ling/",
        "http://\u2603.local/",  # refused by IDNA 2008 (UTS 46 readers): fail closed
        "xds:///billing",
        "google-c2p:///billing",
        "vsock:2:50051",
        "ipv4:127.0.0.1:1,billing:2",  # an ipv4: list holds addresses only
        "ipv4:",
        "dns:///",
    ],
)
def test_an_unreadable_destination_is_never_allowed(destination: str) -> None:
    allowed, address = _egress.judge(
        destination, ("0.0.0.0/0", "::/0", "<single-label>", "*.local")
    )
    assert (allowed, address) == (False, "<unreadable>")


def test_allow_list_entries_are_read_like_destinations() -> None:
    allow = ("0x7f000001", "Billing.SVC.", "*.Corp", "10.0.0.0/8", "\uff42illing2")
    assert _egress.is_allowed("http://127.0.0.1/", allow)
    assert not _egress.is_allowed("http://127.0.0.2/", allow)
    assert _egress.is_allowed("billing.svc:80", allow)
    assert _egress.is_allowed("http://a.b.corp/", allow)
    assert not _egress.is_allowed("http://corp/", allow)
    assert _egress.is_allowed("http://billing2/", allow)
    assert _egress.is_allowed("ipv4:10.1.1.1:1,127.0.0.1:2", allow)


def _aton_spellings(value: int) -> st.SearchStrategy[str]:
    """Every inet_aton spelling of ``value``: 1-4 parts, each decimal, hex or octal."""

    def spell(number: int, style: str) -> str:
        return {
            "dec": str(number),
            "hex": hex(number),
            "HEX": f"0X{number:X}",
            "oct": f"0{number:o}",
        }[style]

    def parts(count: int) -> list[int]:
        head = [(value >> (8 * (3 - i))) & 0xFF for i in range(count - 1)]
        return [*head, value & ((1 << (8 * (5 - count))) - 1)]

    return st.integers(1, 4).flatmap(
        lambda count: st.lists(
            st.sampled_from(["dec", "hex", "HEX", "oct"]), min_size=count, max_size=count
        ).map(
            lambda styles: ".".join(spell(n, s) for n, s in zip(parts(count), styles, strict=True))
        )
    )


@given(st.integers(0, 2**32 - 1).flatmap(lambda v: st.tuples(st.just(v), _aton_spellings(v))))
def test_every_inet_aton_spelling_is_judged_as_its_address(case: tuple[int, str]) -> None:
    value, spelling = case
    address = ipaddress.IPv4Address(value)
    expected = any(
        address in ipaddress.ip_network(entry)
        for entry in DEFAULT
        if "/" in entry and ipaddress.ip_network(entry).version == 4
    )
    assert _egress.judge(f"http://{spelling}:8080/", DEFAULT) == (expected, str(address))


LABEL = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z]", fullmatch=True)
DOTS = st.sampled_from([".", "\u3002", "\uff0e", "\uff61"])


@given(st.lists(st.tuples(LABEL, DOTS), min_size=1, max_size=4), LABEL, st.booleans())
def test_idna_dots_and_case_never_change_a_decision(
    labels: list[tuple[str, str]], last: str, upper: bool
) -> None:
    ascii_name = ".".join([label for label, _ in labels] + [last])
    spelled = "".join(label + dot for label, dot in labels) + last
    if upper:
        spelled = spelled.upper()
    for allow in (DEFAULT, ("*." + last,), (ascii_name,)):
        assert _egress.judge(f"https://{spelled}/", allow) == _egress.judge(
            f"https://{ascii_name}/", allow
        )
    assert not _egress.is_allowed(f"https://{spelled}/", DEFAULT) or last in (
        "svc",
        "internal",
        "local",
    )


def test_inject_strips_identity_for_a_number_spelled_public_address(
    tracer: Tracer, spans: InMemorySpanExporter
) -> None:
    oi.configure(egress_allow=DEFAULT)
    carrier: dict[str, str] = {}
    with tracer.start_as_current_span("caller"), oi.use_identity(user_id="u-1"):
        oi.inject(carrier, destination="http://134744072/")
    assert "user.id" not in carrier.get("baggage", "")
    (event,) = [e for s in spans.get_finished_spans() for e in s.events]
    assert event.name == names.EVENT_STRIPPED
    assert dict(event.attributes or {})[names.ATTR_SERVER_ADDRESS] == "8.8.8.8"


def test_stripping_all_baggage_without_identity_records_no_stripped_event(
    tracer: Tracer, spans: InMemorySpanExporter
) -> None:
    """Nothing of identity was there to keep home: no identity.stripped."""
    from opentelemetry import baggage, context

    oi.configure(egress_allow="10.0.0.0/8", egress_strip_all_baggage=True)
    carrier: dict[str, str] = {}
    token = context.attach(baggage.set_baggage("other", "x"))
    try:
        with tracer.start_as_current_span("caller"):
            oi.inject(carrier, destination="http://127.0.0.2/")
    finally:
        context.detach(token)
    assert "baggage" not in carrier
    assert [e for s in spans.get_finished_spans() for e in s.events] == []


ADDRESSES = st.one_of(
    st.ip_addresses(v=4).map(lambda a: (str(a), f"{a}:{50051}")),
    st.ip_addresses(v=6).map(lambda a: (str(a), f"[{a}]:{50051}")),
)


@given(st.lists(ADDRESSES, min_size=1, max_size=5), st.booleans())
def test_a_grpc_address_list_is_allowed_only_when_every_address_is(
    addresses: list[tuple[str, str]], six: bool
) -> None:
    family = 6 if six else 4
    chosen = [(a, spelled) for a, spelled in addresses if ipaddress.ip_address(a).version == family]
    if not chosen:
        return
    target = f"ipv{family}:" + ",".join(spelled for _a, spelled in chosen)
    readings = [_egress.read_host(a) for a, _spelled in chosen]
    allow = ("10.0.0.0/8", "fd00::/8", "127.0.0.0/8", "::1/128")
    expected = all(
        reading is not None
        and reading[0].address is not None
        and any(
            reading[0].address in ipaddress.ip_network(n)
            for n in allow
            if ipaddress.ip_network(n).version == reading[0].address.version
        )
        for reading in readings
    )
    assert _egress.is_allowed(target, allow) is expected


@given(st.text(max_size=80), st.sampled_from(["", "http://", "ipv4:", "dns:///", "ipv6:["]))
def test_judging_never_raises_and_an_unreadable_destination_is_refused(
    text: str, prefix: str
) -> None:
    destination = prefix + text
    allowed, address = _egress.judge(destination, DEFAULT)
    assert isinstance(address, str)
    if _egress.hosts_of(destination) is None:
        assert (allowed, address) == (False, "<unreadable>")
