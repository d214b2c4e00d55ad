"""identity.sig tokens: the repo's test vectors, v1 and v2, and crafted tokens on a real hop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import otel_identity as oi
from otel_identity import _keys, _signing, _telemetry
from otel_identity._identity import Identity
from tests.signing_helpers import (
    HMAC_A,
    carrier_for,
    ed25519_private,
    public_of,
    token_in,
    write_jwks,
)

VECTORS = json.loads(
    (Path(__file__).parents[1] / "vectors" / "signing.json").read_text(encoding="utf-8")
)


def _identity(claims: dict[str, Any]) -> Identity:
    return Identity(
        claims["user_id"], claims["tenant_id"], claims["session_id"], tuple(claims["roles"])
    )


def _vector_keys() -> _keys.KeySet:
    return _keys.KeySet(_keys.parse_jwks(json.dumps(VECTORS["jwks"])))


@pytest.fixture
def vector_now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_signing, "_now_minutes", lambda: float(VECTORS["now_minutes"]))


class TestVectors:
    """tests/vectors/signing.json is what another language checks itself against."""

    @pytest.mark.parametrize("vector", VECTORS["valid"], ids=lambda v: v["token"][:24])
    def test_canonical_message_is_the_documented_one(self, vector: dict[str, Any]) -> None:
        version, kid, exp, _ = vector["token"].split(".")
        claims = _identity(vector["claims"]).claims()
        message = _signing.canonical(version, kid, int(exp), claims)
        assert message == vector["message"].encode("ascii")

    @pytest.mark.parametrize("vector", VECTORS["valid"], ids=lambda v: v["token"][:24])
    def test_vector_token_verifies(self, vector: dict[str, Any], vector_now: None) -> None:
        identity = _identity(vector["claims"])
        assert _signing.verify(vector["token"], identity, _vector_keys()) is None

    @pytest.mark.parametrize("vector", VECTORS["valid"], ids=lambda v: v["token"][:24])
    def test_minting_reproduces_the_vector_token(
        self, vector: dict[str, Any], vector_now: None
    ) -> None:
        # Ed25519 is deterministic, so both versions mint exactly the vector's token.
        key = _vector_keys().get(vector["kid"])
        assert key is not None
        ttl = (VECTORS["exp"] - VECTORS["now_minutes"]) * 60
        token = _signing.mint(_identity(vector["claims"]), _keys.KeySet([key]), ttl)
        assert token == vector["token"]

    @pytest.mark.parametrize("vector", VECTORS["invalid"], ids=lambda v: v["reason"])
    def test_invalid_vector_is_rejected_for_its_reason(
        self, vector: dict[str, Any], vector_now: None
    ) -> None:
        identity = _identity(vector["claims"])
        assert _signing.verify(vector["token"], identity, _vector_keys()) == vector["reason"]

    def test_vectors_cover_both_versions_and_every_reason(self) -> None:
        assert {v["token"][:2] for v in VECTORS["valid"]} == {"v1", "v2"}
        reasons = {v["reason"] for v in VECTORS["invalid"]}
        assert reasons == {"unknown_key", "bad_signature", "malformed", "expired"}


class TestEd25519:
    def test_v2_token_minted_with_a_private_key_verifies_with_the_public_one(
        self, tmp_path: Path
    ) -> None:
        private = ed25519_private("edge-1")
        oi.configure(keys_file=str(write_jwks(tmp_path / "edge.json", private)))
        carrier = carrier_for(user_id="u", tenant_id="t", roles=["r"])
        token = token_in(carrier)
        assert token is not None and token.startswith("v2.edge-1.")
        oi.configure(keys_file=str(write_jwks(tmp_path / "pub.json", public_of(private))))
        identity = oi.get_identity(oi.extract(carrier, hop="http.server"))
        assert identity == oi.Identity(user_id="u", tenant_id="t", roles=("r",))
        assert identity is not None and identity.verified

    def test_token_whose_version_does_not_match_its_key_type_is_unknown_key(
        self, tmp_path: Path
    ) -> None:
        private = ed25519_private("shared")
        oi.configure(keys_file=str(write_jwks(tmp_path / "ed.json", private)))
        carrier = carrier_for(user_id="u")
        # The same kid now names an HMAC key: a v2 token must not be checked as v1's MAC.
        oi.configure(keys_file=None, signing_keys=f"shared:{HMAC_A}")
        state = oi.hop_state(oi.extract(carrier, hop="http.server"))
        assert state is not None and state.reason == "unknown_key"

    def test_v1_token_under_an_ed25519_kid_is_unknown_key(self, tmp_path: Path) -> None:
        oi.configure(signing_keys=f"shared:{HMAC_A}")
        carrier = carrier_for(user_id="u")
        path = write_jwks(tmp_path / "ed.json", public_of(ed25519_private("shared")))
        oi.configure(signing_keys=None, keys_file=str(path))
        state = oi.hop_state(oi.extract(carrier, hop="http.server"))
        assert state is not None and state.reason == "unknown_key"


def _signed_header() -> str:
    oi.configure(signing_keys=f"k1:{HMAC_A}")
    return carrier_for(user_id="u", tenant_id="t")["baggage"]


def _with_sig(header: str, sig: str) -> str:
    kept = [m for m in header.split(",") if not m.startswith("identity.sig=")]
    return ",".join([*kept, f"identity.sig={sig}"])


# Tokens as they appear in the header (percent-encoded where they are not ASCII).
CRAFTED = [
    "v1.k1.%C2%B2.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",  # "²" passes isdigit
    "v1.k1.%D9%A3.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",  # Arabic-Indic digit
    "v1.k1.99999999.%C3%A9AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",  # non-ASCII mac
    "v2.k1.99999999.%E2%82%AC" + "A" * 85,  # non-ASCII sig
    "v1.k1.99999999.!!!!AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",  # not base64
    "v1.k1.99999999.AAAA",  # too short
    "v1.k1.99999999." + "A" * 86,  # v2's length under v1
    "v1.k1.99999999." + "A" * 1500,  # long (but a member OpenTelemetry keeps)
    "v1.k1.-1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "v1.k1.1e9.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "v1.k1.0099999999.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "v1.k1.9999999999999.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "v1.k%C3%A9.99999999.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "v1.k.1.99999999.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "v1..99999999.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "v1.k1.99999999",
    "v1",
    ".",
    "...",
    "%00",
    "v1.k1.99999999.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA%3D",
    "V1.k1.99999999.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "v9.k1.99999999.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "%F0%9F%98%80",
]


class TestCraftedTokens:
    """Whatever arrives as identity.sig is a rejection with a reason, never an error."""

    @pytest.mark.parametrize("sig", CRAFTED)
    def test_crafted_token_is_malformed_counted_and_recorded(
        self, sig: str, spans: InMemorySpanExporter, tracer: trace.Tracer
    ) -> None:
        header = _with_sig(_signed_header(), sig)
        before = _telemetry.hop_counts().get(("http.server", "rejected"), 0)
        with tracer.start_as_current_span("server", kind=SpanKind.SERVER):
            ctx = oi.extract({"baggage": header}, hop="http.server")
        assert oi.get_identity(ctx) is None
        state = oi.hop_state(ctx)
        assert state is not None and state.reason == "malformed"
        assert _telemetry.hop_counts()[("http.server", "rejected")] == before + 1
        (span,) = spans.get_finished_spans()
        rejected = [dict(e.attributes or {}) for e in span.events if e.name == "identity.rejected"]
        assert rejected == [{"identity.hop": "http.server", "identity.reject_reason": "malformed"}]

    @pytest.mark.parametrize("value", [None, 7, b"v1.k1.1.x", ("v1",), ""])
    def test_non_text_token_put_in_baggage_in_process_never_raises(self, value: object) -> None:
        oi.configure(signing_keys=f"k1:{HMAC_A}")
        identity = oi.Identity(user_id="u")
        assert _signing.verify(value, identity, None) in ("untrusted", "malformed")

    @pytest.mark.parametrize("suffix", [";x=1", ";x", " ;x=1;y=2", "%20;p"])
    def test_token_with_w3c_properties_verifies(self, suffix: str) -> None:
        header = _signed_header()
        token = token_in({"baggage": header})
        assert token is not None
        identity = oi.get_identity(
            oi.extract({"baggage": _with_sig(header, token + suffix)}, hop="http.server")
        )
        assert identity is not None and identity.verified


def test_verify_cache_never_reuses_a_result_of_another_key_set() -> None:
    oi.configure(signing_keys=f"k1:{HMAC_A}")
    token = token_in(carrier_for(user_id="u"))
    identity = oi.Identity(user_id="u")
    old = _keys.KeySet(_keys.hmac_keys(oi.get_settings().signing_keys))
    assert _signing.verify(token, identity, old) is None
    # Built after the old set was dropped: whatever id() it gets, its generation is new.
    del old
    empty = _keys.KeySet([])
    assert _signing.verify(token, identity, empty) == "unknown_key"


class TestProperties:
    """Hypothesis: any text is a reason, never an exception; any claims round-trip."""

    @staticmethod
    def _keys() -> _keys.KeySet:
        oct_key = _keys.Key("hm", "oct", b"h" * 32, private=True)
        return _keys.KeySet([oct_key, *_keys.parse_jwks(_json_of(ed25519_private("ed")))])

    @given(token=st.text(max_size=300))
    @settings(max_examples=300, deadline=None)
    def test_any_text_as_a_token_is_a_reason(self, token: str) -> None:
        reason = _signing.verify(token, Identity("u"), self._keys())
        assert reason in ("malformed", "unknown_key", "bad_signature", "untrusted")

    @given(
        user=st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=40),
        roles=st.lists(st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=8)),
        version=st.sampled_from(["hm", "ed"]),
    )
    @settings(max_examples=200, deadline=None)
    def test_minted_token_verifies_for_its_claims_only(
        self, user: str, roles: list[str], version: str
    ) -> None:
        keys = self._keys()
        minter = keys.get(version)
        assert minter is not None
        identity = Identity(user or None, "t", None, tuple(roles))
        token = _signing.mint(identity, _keys.KeySet([minter]), 300)
        assert token is not None
        assert _signing.verify(token, identity, keys) is None
        other = Identity(user or None, "t2", None, tuple(roles))
        assert _signing.verify(token, other, keys) == "bad_signature"


def _json_of(jwk: dict[str, Any]) -> str:
    return json.dumps({"keys": [jwk]})
