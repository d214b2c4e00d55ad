"""Identity members: exact round trips through OTel's propagator and a spec decoder, limits.

In-process values are the claims themselves (no escape form), so OpenTelemetry's own
propagator carries them exactly, and our propagator's header is read exactly by a plain W3C
percent-decoder.
"""

from __future__ import annotations

from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import baggage
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context

import otel_identity as oi
from otel_identity import _codec

# Any claim set_identity accepts (no control characters, no leading or trailing whitespace),
# including the characters the decoders disagree on, non-ASCII, and long values.
claim = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs")),
    min_size=1,
    max_size=300,
)
tricky = st.sampled_from([" ", "+", ",", ";", "=", "%", "%25", "%2C", "é", "😀", "\u2028", "a b"])
value = st.one_of(claim, st.lists(tricky, min_size=1, max_size=8).map("".join)).filter(
    lambda v: v == v.strip()
)
role = value.filter(lambda v: "," not in v)  # roles travel comma-joined
identities = st.builds(
    oi.Identity,
    user_id=st.one_of(st.none(), value),
    tenant_id=st.one_of(st.none(), value),
    session_id=st.one_of(st.none(), value),
    roles=st.lists(role, max_size=4).map(tuple),
).filter(lambda i: not i.is_empty)

PROPAGATOR = W3CBaggagePropagator()
OURS = oi.IdentityBaggagePropagator()


def spec_decode(header: str) -> dict[str, str]:
    """A W3C-compliant reader: split members, drop properties, percent-decode ('+' is '+')."""
    out: dict[str, str] = {}
    for member in header.split(","):
        pair = member.split(";", 1)[0]
        key, _, raw = pair.partition("=")
        out[unquote(key.strip(" \t"))] = unquote(raw.strip(" \t"))
    return out


def header_of(identity: oi.Identity, propagator: object = PROPAGATOR) -> str:
    carrier: dict[str, str] = {}
    propagator.inject(carrier, context=oi.set_identity(identity, context=Context()))  # type: ignore[attr-defined]
    return carrier["baggage"]


@settings(max_examples=300, deadline=None)
@given(identities)
def test_identity_round_trips_exactly_through_otel_w3c_propagator(identity: oi.Identity) -> None:
    ctx = PROPAGATOR.extract({"baggage": header_of(identity)}, context=Context())
    assert oi.get_identity(ctx) == identity


@settings(max_examples=300, deadline=None)
@given(identities)
def test_identity_round_trips_exactly_through_a_spec_percent_decoder(
    identity: oi.Identity,
) -> None:
    members = spec_decode(header_of(identity, OURS))
    decoded = _codec.decode_identity(
        _codec.raw_values(members, ("user.id", "tenant.id", "session.id", "user.roles"))
    )
    assert decoded == identity


@settings(max_examples=200, deadline=None)
@given(identities)
def test_identity_round_trips_through_oi_inject_and_extract(identity: oi.Identity) -> None:
    carrier: dict[str, str] = {}
    oi.inject(carrier, context=oi.set_identity(identity, context=Context()))
    assert oi.get_identity(oi.extract(carrier, hop="manual", context=Context())) == identity


@settings(max_examples=200, deadline=None)
@given(identities)
def test_otel_propagator_reads_our_header_exactly(identity: oi.Identity) -> None:
    ctx = PROPAGATOR.extract({"baggage": header_of(identity, OURS)}, context=Context())
    assert oi.get_identity(ctx) == identity


@given(identities)
def test_in_process_baggage_values_are_the_claims(identity: oi.Identity) -> None:
    ctx = oi.set_identity(identity, context=Context())
    assert baggage.get_baggage("user.id", ctx) == identity.user_id
    assert baggage.get_baggage("tenant.id", ctx) == identity.tenant_id
    assert baggage.get_baggage("session.id", ctx) == identity.session_id
    assert baggage.get_baggage("user.roles", ctx) == (",".join(identity.roles) or None)


def test_ordinary_ids_travel_unchanged_so_other_sdks_read_them() -> None:
    header = header_of(oi.Identity(user_id="u-42", tenant_id="acme", roles=("admin", "ops")), OURS)
    assert header == "user.id=u-42,tenant.id=acme,user.roles=admin%2Cops"
    assert spec_decode(header)["user.roles"].split(",") == ["admin", "ops"]


def test_a_role_with_a_comma_is_refused_since_roles_travel_comma_joined() -> None:
    with pytest.raises(ValueError, match="comma"):
        oi.set_identity(roles=("a,b", "c"))


@pytest.mark.parametrize("claim", [" ada", "ada ", "\tada", "ada\u2028", "a\x85b", "a\x1bb"])
def test_claims_with_edge_whitespace_or_control_characters_are_refused(claim: str) -> None:
    with pytest.raises(ValueError):
        oi.set_identity(user_id=claim)


@pytest.mark.parametrize(
    "header",
    ["user.roles=admin%2C%2Cops", "user.roles=%2Cadmin", "user.id=%20u"],
)
def test_inbound_empty_roles_or_edge_whitespace_are_malformed(header: str) -> None:
    ctx = oi.extract({"baggage": header}, hop="http.server")
    assert oi.get_identity(ctx) is None
    state = oi.hop_state(ctx)
    assert state is not None and state.reason == "malformed"


def test_foreign_sdk_properties_are_ignored() -> None:
    ctx = oi.extract({"baggage": "user.id=alice;prop=1,tenant.id=t1"}, hop="manual")
    assert oi.get_identity(ctx) == oi.Identity(user_id="alice", tenant_id="t1")


@pytest.mark.parametrize(
    "header",
    [
        "",
        ",,,",
        "user.id",
        "user.id=",
        "=x",
        "user.id=%ZZ%",
        "user.id=a\x00b",
        "user.id=%00",
        "user.id=" + "%E2" * 50,
        "user.id=\u00e9",
        "user.id=a;;;=;",
        "user.roles=,,,",
        "user.id=" + "x" * 5000,
        "user.id=" + "%41" * 2000,
        ",".join(f"k{i}=v" for i in range(500)),
        "tenant.id=" + "é" * 100,
        "user.id=ok,user.id=second",
    ],
)
def test_malformed_baggage_headers_never_raise(header: str) -> None:
    ctx = oi.extract({"baggage": header}, hop="http.server")
    identity = oi.get_identity(ctx)
    if identity is not None:
        assert all(len(v) <= _codec.MAX_VALUE_CHARS for v in identity.claims()[:3] if v)


def test_hostile_decoded_values_are_rejected_as_malformed(spans: object) -> None:
    ctx = oi.extract({"baggage": "user.id=%00evil"}, hop="http.server")
    assert oi.get_identity(ctx) is None
    state = oi.hop_state(ctx)
    assert state is not None and state.reason == "malformed"


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_any_header_text_extracts_without_raising(header: str) -> None:
    oi.extract({"baggage": header, "traceparent": header}, hop="http.server")


def test_inject_trims_to_64_members_and_keeps_identity_members() -> None:
    ctx = Context()
    for i in range(100):
        ctx = baggage.set_baggage(f"k{i}", "v", ctx)
    ctx = oi.set_identity(user_id="u", tenant_id="t", context=ctx)
    ctx = baggage.set_baggage("late", "v", ctx)
    carrier: dict[str, str] = {}
    oi.inject(carrier, context=ctx)
    members = spec_decode(carrier["baggage"])
    assert len(members) == 64
    assert members["user.id"] == "u" and members["tenant.id"] == "t"


def test_inject_trims_to_8192_bytes_and_keeps_identity_members_even_when_last() -> None:
    ctx = Context()
    for i in range(40):
        ctx = baggage.set_baggage(f"big{i}", "x" * 400, ctx)
    ctx = oi.set_identity(user_id="u", tenant_id="t", context=ctx)
    # identity members added last through the plain API land at the end of the header
    ctx = baggage.set_baggage("user.id", "u2", ctx)
    carrier: dict[str, str] = {}
    oi.inject(carrier, context=ctx)
    assert len(carrier["baggage"].encode()) <= 8192
    members = spec_decode(carrier["baggage"])
    assert members["user.id"] == "u2" and members["tenant.id"] == "t"


def test_extract_keeps_identity_from_an_oversize_header() -> None:
    filler = ",".join(f"f{i}={'y' * 300}" for i in range(40))
    header = filler + ",user.id=u,tenant.id=t"
    assert len(header) > 8192
    ctx = oi.extract({"baggage": header}, hop="http.server")
    assert oi.get_identity(ctx) == oi.Identity(user_id="u", tenant_id="t")
    assert len(baggage.get_all(ctx)) <= 64


def test_extract_keeps_identity_beyond_64_members() -> None:
    header = ",".join(f"f{i}=v" for i in range(100)) + ",user.id=u"
    ctx = oi.extract({"baggage": header}, hop="http.server")
    assert oi.get_identity(ctx) == oi.Identity(user_id="u")
    assert len(baggage.get_all(ctx)) == 64


def test_identity_members_too_large_for_any_header_are_rejected_as_oversize() -> None:
    header = ",".join(f"user.id={'z' * 3000}" for _ in range(3)) + ",tenant.id=" + "q" * 3000
    ctx = oi.extract({"baggage": header}, hop="http.server")
    assert oi.get_identity(ctx) is None
    state = oi.hop_state(ctx)
    assert state is not None and state.reason == "oversize"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["a=1", "b=2"], "a=1"),  # a list: the first value
        (("a=1",), "a=1"),  # any other sequence
        (iter(["a=1"]), "a=1"),  # any iterable
        ("a=1", "a=1"),  # one string
        ([], None),
        ((), None),
        ("", None),
        (None, None),
        ([b"a=1"], None),  # not text: ignored, never decoded here
        ([None, "a=1"], None),  # only the first value counts, as for OpenTelemetry
    ],
)
def test_first_header_value_of_whatever_a_getter_returns(values: object, expected: object) -> None:
    from otel_identity import _propagation

    assert _propagation.first(values) == expected


@pytest.mark.parametrize(
    ("values", "header"),
    [
        (None, None),
        ("", None),
        ("a=1", "a=1"),
        ([], None),
        (["a=1"], "a=1"),
        ([""], None),
        ([b"a=1"], None),
        (["a=1", "b=2"], "a=1,b=2"),
        (("a=1",), "a=1"),
        (["a=1", 7, "b=2"], "a=1,b=2"),
        (iter(["a=1"]), "a=1"),
    ],
)
def test_the_values_a_getter_returns_are_one_baggage_list(
    values: object, header: str | None
) -> None:
    from otel_identity import _propagation

    assert _propagation.joined(values) == header
