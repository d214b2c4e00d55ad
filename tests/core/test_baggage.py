"""The W3C baggage codec and otel-identity's own baggage propagator.

Parse rules (keys never decoded, values decoded once, only OWS trimmed, control characters
refused, duplicates), exact encoding that every decoder reads back, limits in bytes that keep
identity, the propagator's place in the global textmap, and the receive path's verdicts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, unquote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import baggage, propagate
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

import otel_identity as oi
from otel_identity import _baggage, _baggage_propagator, _propagation
from otel_identity._baggage_propagator import baggage_step_status, parsed_of

KEEP = frozenset({"user.id", "tenant.id", "session.id", "user.roles", "identity.sig"})

# Any text a value may hold: everything but control characters and lone surrogates.
values = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=60)
tricky = st.lists(
    st.sampled_from([" ", "  ", "%", "%25", "+", ";", ",", "=", "é", "😀", "a", "%zz", '"', "\\"]),
    max_size=10,
).map("".join)
any_value = st.one_of(values, tricky)
ALNUM = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# baggage-octet: what a value may hold on the wire
OCTETS = set(ALNUM + "!#$%&'()*+-./:<=>?@[]^_`{|}~")
tokens = st.text(alphabet="!#$%&'*+-.^_`|~" + ALNUM, min_size=1, max_size=20)

plain_keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=12)


def members_of(header: str, keep: frozenset[str] = KEEP) -> dict[str, str]:
    return dict(_baggage.parse(header, keep).members)


# --- parse rules ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "%75ser.id=mallory",
        "user.id%20=mallory",
        "user%2Eid=mallory",
        "USER.ID=mallory",
        "user.id+=mallory",
        "us\u0435r.id=mallory",  # a Cyrillic e
        "user .id=mallory",
        "user.id\x00=mallory",
        "\x00user.id=mallory",
    ],
)
def test_look_alike_keys_are_never_an_identity_key(header: str) -> None:
    assert "user.id" not in members_of(header)
    ctx = oi.extract({"baggage": header + ",tenant.id=acme"}, hop="http.server")
    identity = oi.get_identity(ctx)
    assert identity is None or identity.user_id is None


def test_keys_are_kept_as_sent_never_percent_decoded() -> None:
    assert members_of("%75ser.id=a,user.id%20=b") == {"%75ser.id": "a", "user.id%20": "b"}


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("user.id=u", "u"),
        (" \tuser.id \t= \tu \t", "u"),
        ("user.id=u;x=1", "u"),
        ("user.id=u ; x = 1 ; flag", "u"),
        ("user.id=u;flag;other=%00", "u"),
        ("user.id=ada%20lovelace", "ada lovelace"),
        ("user.id=a+b", "a+b"),  # '+' is a plus sign, as W3C says
        ("user.id=a%2Bb", "a+b"),
        ("user.id=%25", "%"),
        ("user.id=%C3%A9", "é"),
        ("user.id=%c3%a9", "é"),
        ("user.id=a%3Bb%2Cc", "a;b,c"),
        ("user.id=", ""),
    ],
)
def test_values_are_percent_decoded_once_ows_and_properties_dropped(
    header: str, expected: str
) -> None:
    assert members_of(header) == {"user.id": expected}


@pytest.mark.parametrize(
    "member",
    [
        "user.id=a b",  # space inside a value is not a baggage-octet
        "user.id=a\x00b",
        "user.id=\u00e9",  # raw non-ASCII
        'user.id="u"',
        "user.id=a\\b",
        "user.id=%ZZ",
        "user.id=%4",
        "user.id=%",
        "user.id=%C3%28",  # invalid UTF-8
        "user.id=%FF",
        "user.id=%ED%A0%80",  # an encoded surrogate
        "user.id=%00",
        "user.id=acme%0D",
        "user.id=a%0Ab",
        "user.id=%1B[31m",
        "user.id=%7F",
        "user.id=%C2%85",  # C1: NEL
        "user.id=%C2%9B",  # C1: CSI
        "user.id",
        "user.id;x=1",
    ],
)
def test_malformed_members_are_refused_and_named(member: str) -> None:
    parsed = _baggage.parse(member + ",other=ok", KEEP)
    assert dict(parsed.members) == {"other": "ok"}
    assert "user.id" in parsed.refused


@pytest.mark.parametrize("member", ["=x", " = x", "k k=v", "(k)=v", "k\x7f=v", "é=v"])
def test_members_whose_key_is_not_a_token_are_refused(member: str) -> None:
    parsed = _baggage.parse(member + ",other=ok", KEEP)
    assert dict(parsed.members) == {"other": "ok"}
    assert parsed.refused


def test_empty_list_elements_are_no_members() -> None:
    parsed = _baggage.parse(" , ,\t,a=1,,", KEEP)
    assert dict(parsed.members) == {"a": "1"}
    assert not parsed.refused


def test_equal_duplicates_are_one_member_different_ones_ambiguous() -> None:
    parsed = _baggage.parse("user.id=u,a=1,user.id=u;p=1,a=2,b=%62,b=b", KEEP)
    assert dict(parsed.members) == {"user.id": "u", "b": "b"}
    assert parsed.ambiguous == {"a"}


def test_several_headers_are_one_list() -> None:
    parsed = _baggage.parse(["user.id=u", "tenant.id=t", "user.id=other"], KEEP)
    assert dict(parsed.members) == {"tenant.id": "t"}
    assert parsed.ambiguous == {"user.id"}
    assert _baggage.parse(["a=1", "b=2"], KEEP).members == {"a": "1", "b": "2"}


def test_parse_is_memoized_per_header_and_keep_set() -> None:
    header = "user.id=memo-check,x=1"
    assert _baggage.parse(header, KEEP) is _baggage.parse(header, KEEP)
    assert _baggage.parse(header, frozenset()) is not _baggage.parse(header, KEEP)


def test_a_header_too_long_for_the_memo_is_still_parsed_once_per_request() -> None:
    header = "user.id=u," + ",".join(f"k{i}=" + "v" * 40 for i in range(600))
    assert len(header) > 2 * 8192
    first = _baggage.parse(header, KEEP)
    assert _baggage.parse(header[:], KEEP) is first  # (the next reader in the same thread)
    assert _baggage.parse(header + ",z=1", KEEP) is not first


# --- limits, in bytes, identity first -------------------------------------------------------


def test_limits_are_counted_in_bytes_and_keep_identity_members() -> None:
    # 3 * 3,003 bytes of multibyte filler (1,500 characters each once decoded).
    filler = ",".join(f"f{i}=" + "%C3%A9" * 500 for i in range(3))
    header = filler + ",user.id=u,tenant.id=t"
    assert len(header) > 8192
    parsed = _baggage.parse(header, KEEP)
    assert parsed.members["user.id"] == "u" and parsed.members["tenant.id"] == "t"
    assert not parsed.oversize and parsed.dropped == 1
    assert len(_baggage.encode(parsed.members, KEEP) or "") <= 8192


def test_a_raw_multibyte_header_is_measured_in_utf8_bytes() -> None:
    # A property carrying raw UTF-8 (a getter that decodes headers as UTF-8): 3 bytes a char.
    filler = ",".join(f"f{i}=v;p=" + "€" * 1000 for i in range(3))
    parsed = _baggage.parse(filler + ",user.id=u", KEEP)
    assert parsed.members["user.id"] == "u"
    assert parsed.dropped >= 1


def test_at_most_64_members_identity_first() -> None:
    header = ",".join(f"k{i}=v" for i in range(100)) + ",user.id=u"
    parsed = _baggage.parse(header, KEEP)
    assert len(parsed.members) == 64 and parsed.members["user.id"] == "u"
    assert list(parsed.members)[:63] == [f"k{i}" for i in range(63)]


def test_identity_that_alone_does_not_fit_is_oversize() -> None:
    header = "user.id=" + "u" * 5000 + ",tenant.id=" + "t" * 5000 + ",a=1"
    parsed = _baggage.parse(header, KEEP)
    assert parsed.oversize
    assert dict(parsed.members) == {"a": "1"}
    assert parsed.verdict(KEEP) == "oversize"


def test_encode_trims_in_bytes_and_keeps_identity_members() -> None:
    members = {f"big{i}": "é" * 300 for i in range(10)}  # 1,800 bytes each, encoded
    members["user.id"] = "u"
    header = _baggage.encode(members, KEEP)
    assert header is not None and len(header) <= 8192
    assert "user.id=u" in header.split(",")
    assert len(header.split(",")) == 5


def test_encode_keeps_at_most_64_members() -> None:
    members = {f"k{i}": "v" for i in range(80)} | {"user.id": "u"}
    header = _baggage.encode(members, KEEP) or ""
    assert len(header.split(",")) == 64 and "user.id=u" in header.split(",")


# --- exact encoding --------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(tokens, any_value, max_size=6))
def test_encode_then_parse_gives_the_exact_members(members: dict[str, str]) -> None:
    header = _baggage.encode(members, KEEP)
    assert _baggage.parse(header, KEEP).members == members


@settings(max_examples=400, deadline=None)
@given(any_value)
def test_every_decoder_reads_our_encoding_exactly(value: str) -> None:
    header = _baggage.encode({"k": value}, KEEP)
    assert header is not None
    wire = header.partition("=")[2]
    assert unquote_plus(wire) == value  # OpenTelemetry Python
    assert unquote(wire) == value  # W3C, OpenTelemetry JS (decodeURIComponent)
    assert set(wire) <= OCTETS
    assert "+" not in wire and " " not in wire


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(plain_keys, values.filter(lambda v: v == v.strip()), max_size=6))
def test_opentelemetry_python_reads_our_header_exactly(members: dict[str, str]) -> None:
    # (OpenTelemetry strips surrounding whitespace from values and percent-decodes keys, so
    # those are left out here: only the values' encoding is under test)
    header = _baggage.encode(members, KEEP)
    ctx = W3CBaggagePropagator().extract({"baggage": header or ""}, context=Context())
    assert dict(baggage.get_all(ctx)) == members


def test_members_parse_would_refuse_are_not_encoded() -> None:
    header = _baggage.encode({"ok": "1", "bad key": "2", "ctl": "a\x1bb", "sur": "\ud800"}, KEEP)
    assert header == "ok=1"
    assert _baggage.encode({"bad key": "x"}, KEEP) is None


def test_non_text_values_are_sent_as_their_str() -> None:
    assert _baggage.encode({"n": 3}, KEEP) == "n=3"


# --- the propagator ----------------------------------------------------------------------------


def test_propagator_merges_members_into_existing_baggage_and_keeps_the_facts() -> None:
    base = baggage.set_baggage("local", "1", context=Context())
    ctx = oi.IdentityBaggagePropagator().extract({"baggage": "a=x%20y,b=1,b=2"}, context=base)
    assert dict(baggage.get_all(ctx)) == {"local": "1", "a": "x y"}
    parsed = parsed_of(ctx)
    assert parsed is not None and parsed.ambiguous == {"b"}


def test_propagator_without_a_header_returns_the_context_unchanged() -> None:
    base = Context()
    assert oi.IdentityBaggagePropagator().extract({}, context=base) is base
    assert parsed_of(base) is None


def test_propagator_drops_every_identity_member_when_one_is_malformed() -> None:
    base = baggage.set_baggage("user.id", "stale", context=Context())
    header = "tenant.id=acme,user.id=a,user.id=b,other=1"
    ctx = oi.IdentityBaggagePropagator().extract({"baggage": header}, context=base)
    assert dict(baggage.get_all(ctx)) == {"other": "1"}


def test_propagator_injects_every_member_exactly() -> None:
    ctx = baggage.set_baggage("note", "50% off; a+b, é", context=Context())
    ctx = oi.set_identity(user_id="ada lovelace", context=ctx)
    carrier: dict[str, str] = {}
    oi.IdentityBaggagePropagator().inject(carrier, context=ctx)
    assert carrier["baggage"] == "user.id=ada%20lovelace,note=50%25%20off%3B%20a%2Bb%2C%20%C3%A9"
    assert oi.IdentityBaggagePropagator().fields == {"baggage"}


def test_propagator_is_loaded_by_name_from_otel_propagators() -> None:
    code = (
        "from opentelemetry import propagate\n"
        "from otel_identity._baggage_propagator import baggage_step_status\n"
        "ctx = propagate.extract({'baggage': '%75ser.id=m,user.id=ada%20l'})\n"
        "from opentelemetry import baggage\n"
        "print(baggage_step_status(), dict(baggage.get_all(ctx)))\n"
    )
    env = {**os.environ, "OTEL_PROPAGATORS": "tracecontext,identity_baggage"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ours {'%75ser.id': 'm', 'user.id': 'ada l'}"


def test_zero_code_setup_puts_ours_in_the_global_textmap(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(
        "from otel_identity._baggage_propagator import baggage_step_status\n"
        "print(baggage_step_status())\n"
    )
    env = {
        **os.environ,
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "",
    }
    result = subprocess.run(
        [str(Path(sys.executable).parent / "opentelemetry-instrument"), sys.executable, str(app)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "ours", result.stdout + result.stderr


# --- its place in the global textmap -------------------------------------------------------------


@pytest.fixture
def textmap() -> object:
    original = propagate.get_global_textmap()
    yield original
    _baggage_propagator.uninstall()
    propagate.set_global_textmap(original)


def test_instrumentor_puts_ours_in_place_of_opentelemetrys_and_back(textmap: object) -> None:
    trace_step = TraceContextTextMapPropagator()
    configured = CompositePropagator([trace_step, W3CBaggagePropagator()])
    propagate.set_global_textmap(configured)
    instrumentor = oi.IdentityInstrumentor()
    try:
        instrumentor.instrument()
        instrumentor.instrument()
        installed = propagate.get_global_textmap()
        steps = _propagation.steps(installed)
        assert steps is not None and steps[0] is trace_step
        assert type(steps[1]) is oi.IdentityBaggagePropagator
        assert baggage_step_status() == "ours"
        instrumentor.uninstrument()
        assert propagate.get_global_textmap() is configured
        assert baggage_step_status() == "opentelemetry"
    finally:
        instrumentor.uninstrument()


def test_a_lone_baggage_propagator_is_replaced_too(textmap: object) -> None:
    propagate.set_global_textmap(W3CBaggagePropagator())
    assert _baggage_propagator.install()
    assert type(propagate.get_global_textmap()) is oi.IdentityBaggagePropagator
    assert _baggage_propagator.install()  # idempotent
    _baggage_propagator.uninstall()
    assert type(propagate.get_global_textmap()) is W3CBaggagePropagator


def test_a_textmap_without_baggage_is_left_alone(textmap: object) -> None:
    only_trace = TraceContextTextMapPropagator()
    propagate.set_global_textmap(only_trace)
    assert not _baggage_propagator.install()
    assert propagate.get_global_textmap() is only_trace
    assert baggage_step_status() == "none"


def test_uninstall_leaves_a_textmap_someone_set_later(textmap: object) -> None:
    propagate.set_global_textmap(W3CBaggagePropagator())
    _baggage_propagator.install()
    theirs = TraceContextTextMapPropagator()
    propagate.set_global_textmap(theirs)
    _baggage_propagator.uninstall()
    assert propagate.get_global_textmap() is theirs


class _Opaque(CompositePropagator):
    """A composite of unknown make: it may combine its steps its own way."""


def test_status_of_an_opaque_textmap(textmap: object) -> None:
    propagate.set_global_textmap(_Opaque([W3CBaggagePropagator()]))
    assert baggage_step_status() == "opaque"


def test_opaque_textmap_gives_identity_only_from_our_own_parse(textmap: object) -> None:
    propagate.set_global_textmap(_Opaque([W3CBaggagePropagator()]))
    ctx = oi.extract({"baggage": "%75ser.id=mallory,tenant.id=acme"}, hop="http.server")
    assert oi.get_identity(ctx) == oi.Identity(tenant_id="acme")
    assert "user.id" not in baggage.get_all(ctx)


# --- the receive path's verdicts -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("user.id=a,user.id=b,tenant.id=t", "malformed"),
        ("user.id=a,tenant.id=t,tenant.id=t2", "malformed"),
        ("user.id=a,tenant.id=acme%0D", "malformed"),
        ("user.id=a,tenant.id=%ZZ", "malformed"),
        ("user.id=a,identity.sig=x,identity.sig=y", "malformed"),
        ("user.id=" + "u" * 9000, "oversize"),
    ],
)
@pytest.mark.parametrize("setup", ["default", "ours"])
def test_ambiguous_refused_or_oversize_identity_rejects_the_hop(
    header: str, reason: str, setup: str, textmap: object
) -> None:
    if setup == "ours":
        _baggage_propagator.install()
    for trace_context in (True, False):  # the general path and the baggage-only path
        ctx = oi.extract(
            {"baggage": header}, hop="http.server", context=Context(), trace_context=trace_context
        )
        assert oi.get_identity(ctx) is None
        state = oi.hop_state(ctx)
        assert state is not None and state.reason == reason
        assert not set(baggage.get_all(ctx)) & KEEP


def test_equal_duplicate_identity_members_are_one(textmap: object) -> None:
    ctx = oi.extract({"baggage": "user.id=a,tenant.id=t,user.id=a;p=1"}, hop="http.server")
    assert oi.get_identity(ctx) == oi.Identity(user_id="a", tenant_id="t")


def test_a_malformed_member_that_is_not_identity_leaves_identity_alone() -> None:
    ctx = oi.extract({"baggage": "user.id=a,x=%ZZ,y=1,y=2"}, hop="http.server")
    assert oi.get_identity(ctx) == oi.Identity(user_id="a")


def test_identity_keys_follow_the_configuration() -> None:
    oi.configure(user_key="enduser.id")
    ctx = oi.extract({"baggage": "enduser.id=a,enduser.id=b"}, hop="http.server")
    state = oi.hop_state(ctx)
    assert state is not None and state.reason == "malformed"


def test_several_baggage_headers_are_one_list_on_the_receive_path() -> None:
    ctx = oi.extract({"baggage": ["user.id=a", "tenant.id=t"]}, hop="http.server")
    assert oi.get_identity(ctx) == oi.Identity(user_id="a", tenant_id="t")
    ctx = oi.extract({"baggage": ["user.id=a", "user.id=b"]}, hop="http.server")
    state = oi.hop_state(ctx)
    assert state is not None and state.reason == "malformed"


@pytest.mark.parametrize(
    "header",
    [
        "user.id=mallory,k=\u00ff",  # a backslash escape decoded, and the stray byte beside it
        "user.id=alice,tenant.id=caf\u00e9",  # a raw (not percent-encoded) UTF-8 value
        "k=v\u00ff,user.id=alice",
    ],
)
def test_a_header_with_text_outside_ascii_carries_no_identity(header: str) -> None:
    parsed = _baggage.parse(header, KEEP)
    assert parsed.garbled
    assert parsed.verdict(KEEP) == "malformed"
    ctx = oi.IdentityBaggagePropagator().extract({"baggage": header}, context=Context())
    assert "user.id" not in (baggage.get_all(ctx) or {})


def test_a_garbled_header_without_identity_keeps_its_other_members() -> None:
    parsed = _baggage.parse("k=v,x=\u00ff", KEEP)
    assert parsed.garbled and parsed.verdict(KEEP) is None
    assert parsed.members == {"k": "v"} and parsed.refused == {"x"}


def test_an_ascii_header_is_not_garbled() -> None:
    assert not _baggage.parse("user.id=caf%C3%A9", KEEP).garbled
