"""Minting rules: sign only identity established here or verified on arrival (#12, defect 1)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from otel_identity_kafka import identity_headers

import otel_identity as oi
from otel_identity import _signing
from tests.signing_helpers import (
    HMAC_A,
    carrier_for,
    ed25519_private,
    public_of,
    token_in,
    write_jwks,
)

ATTACK = {"baggage": "user.id=mallory,tenant.id=acme,user.roles=admin"}


def _sent(hop: str | None = None, context: Context | None = None) -> dict[str, str]:
    """What this service sends on a hop from the current (or given) context."""
    carrier: dict[str, str] = {}
    oi.inject(carrier, hop=hop, context=context)
    return carrier


def _downstream(carrier: dict[str, str]) -> oi.Identity | None:
    """What a ``verify`` service holding the same keys admits from ``carrier``."""
    settings = oi.get_settings()
    oi.configure(inbound="verify")
    try:
        return oi.get_identity(oi.extract(carrier, hop="http.server"))
    finally:
        oi.configure(inbound=settings.inbound)


class TestTrustLaundering:
    def test_identity_admitted_on_trust_is_never_signed(self) -> None:
        oi.configure(inbound="trust", signing_keys=f"k1:{HMAC_A}")
        with oi.continue_from(ATTACK, hop="http.server") as admitted:
            assert admitted == oi.Identity("mallory", "acme", roles=("admin",))
            for hop in (None, "http.client", "grpc.client", "queue.publish", "process"):
                sent = _sent(hop)
                assert "user.id=mallory" in sent["baggage"]
                assert token_in(sent) is None, hop
                assert _downstream(sent) is None

    def test_laundering_through_a_thread_hop_is_refused_too(self) -> None:
        oi.configure(inbound="trust", signing_keys=f"k1:{HMAC_A}")
        with oi.continue_from(ATTACK, hop="queue.consume"):
            inner = oi.receive(otel_context.get_current(), hop="thread")
            assert oi.get_identity(inner) == oi.Identity("mallory", "acme", roles=("admin",))
            assert token_in(_sent(context=inner)) is None

    def test_plain_opentelemetry_baggage_is_not_signed_either(self) -> None:
        from opentelemetry import baggage

        oi.configure(inbound="trust", signing_keys=f"k1:{HMAC_A}")
        ctx = baggage.set_baggage("user.id", "mallory", Context())
        assert oi.get_identity(ctx) == oi.Identity("mallory")
        assert token_in(_sent(context=ctx)) is None

    def test_token_arriving_with_a_trusted_identity_is_forwarded_unchanged(self) -> None:
        oi.configure(inbound="trust", signing_keys=f"k1:{HMAC_A}")
        forged = "v1.k1.99999999.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        arriving = {"baggage": f"user.id=mallory,identity.sig={forged}"}
        with oi.continue_from(arriving, hop="http.server"):
            sent = _sent("http.client")
        assert token_in(sent) == forged
        assert _downstream(sent) is None

    def test_genuine_token_arriving_on_trust_is_forwarded_and_verifies_downstream(self) -> None:
        oi.configure(inbound="trust", signing_keys=f"k1:{HMAC_A}")
        upstream = carrier_for(user_id="u", tenant_id="t")
        with oi.continue_from(upstream, hop="http.server"):
            sent = _sent("http.client")
        assert token_in(sent) == token_in(upstream)
        downstream = _downstream(sent)
        assert downstream is not None and downstream.verified

    def test_set_identity_inside_a_trusted_hop_is_local_and_signed(self) -> None:
        oi.configure(inbound="trust", signing_keys=f"k1:{HMAC_A}")
        with oi.continue_from(ATTACK, hop="http.server"):
            with oi.use_identity(user_id="alice", tenant_id="acme"):
                sent = _sent("http.client")
        assert token_in(sent) is not None
        downstream = _downstream(sent)
        assert downstream == oi.Identity("alice", "acme") and downstream.verified


class TestVerifiedIdentity:
    def test_verified_identity_is_re_signed_by_a_service_that_can_mint(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        oi.configure(signing_keys=f"k1:{HMAC_A}", token_ttl=300)
        upstream = carrier_for(user_id="u")
        later = time.time() / 60 + 4  # the upstream token has a minute left
        monkeypatch.setattr(_signing, "_now_minutes", lambda: later)
        with oi.continue_from(upstream, hop="grpc.server") as admitted:
            assert admitted is not None and admitted.verified
            sent = _sent("grpc.client")
        token = token_in(sent)
        assert token is not None and token != token_in(upstream)
        assert int(token.split(".")[2]) >= int(later) + 5  # a fresh lifetime
        assert _downstream(sent) == oi.Identity("u")

    def test_verify_only_service_forwards_the_verified_token_unchanged(
        self, tmp_path: Path
    ) -> None:
        private = ed25519_private("edge")
        oi.configure(keys_file=str(write_jwks(tmp_path / "edge.json", private)))
        upstream = carrier_for(user_id="u", tenant_id="t")
        oi.configure(keys_file=str(write_jwks(tmp_path / "pub.json", public_of(private))))
        with oi.continue_from(upstream, hop="http.server") as admitted:
            assert admitted is not None and admitted.verified
            sent = _sent("http.client")
            queued = _sent("queue.publish")
        assert token_in(sent) == token_in(upstream) == token_in(queued)
        assert _downstream(sent) == oi.Identity("u", "t")

    def test_verify_only_service_cannot_mint_its_own_identity(self, tmp_path: Path) -> None:
        path = write_jwks(tmp_path / "pub.json", public_of(ed25519_private("edge")))
        oi.configure(keys_file=str(path))
        with oi.continue_from(carrier_for(user_id="u"), hop="http.server"):
            with oi.use_identity(user_id="escalated", roles=["admin"]):
                sent = _sent("http.client")
        assert token_in(sent) is None
        assert _downstream(sent) is None


class TestTokenLifetime:
    def _exp_minutes(self, carrier: dict[str, str]) -> int:
        token = token_in(carrier)
        assert token is not None
        return int(token.split(".")[2])

    def test_queue_hop_token_lives_queue_token_ttl_and_a_sync_hop_token_ttl(self) -> None:
        oi.configure(signing_keys=f"k1:{HMAC_A}", token_ttl=300, queue_token_ttl=86400)
        now = time.time() / 60
        with oi.use_identity(user_id="u"):
            sync = self._exp_minutes(_sent("http.client"))
            queued = self._exp_minutes(_sent("queue.publish"))
            task = self._exp_minutes(_sent("task"))  # a compute engine's task may wait too
            again = self._exp_minutes(_sent("grpc.client"))  # not the cached queue token
        assert now + 4 <= sync <= now + 6
        assert now + 1439 <= queued <= now + 1441
        assert now + 1439 <= task <= now + 1441
        assert again == sync

    def test_queue_token_still_verifies_after_the_sync_ttl(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        oi.configure(signing_keys=f"k1:{HMAC_A}")
        carrier = carrier_for(user_id="u", hop="queue.publish")
        hours_later = time.time() / 60 + 6 * 60
        monkeypatch.setattr(_signing, "_now_minutes", lambda: hours_later)
        assert oi.get_identity(oi.extract(carrier, hop="queue.consume")) == oi.Identity("u")

    def test_kafka_headers_carry_a_queue_lifetime_token(self) -> None:
        oi.configure(signing_keys=f"k1:{HMAC_A}")
        now = time.time() / 60
        with oi.use_identity(user_id="u"):
            pairs = identity_headers()
        header = dict(pairs)["baggage"]
        text = header.decode() if isinstance(header, bytes) else header
        assert self._exp_minutes({"baggage": text}) >= now + 1439
