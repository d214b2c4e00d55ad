"""Signed identity remembered on both sides of a hop (#13): a sender reuses a token until half
its life is gone, a receiver reuses a verdict until the token expires; neither outlives a key
set reload or a settings change. Time is the fake clock of ``_signing._now_minutes``."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry.context import Context

import otel_identity as oi
from otel_identity import _keys, _receiving, _signing
from otel_identity.instrumentation import outgoing_context
from tests.signing_helpers import (
    HMAC_A,
    HMAC_B,
    carrier_for,
    ed25519_private,
    oct_jwk,
    public_of,
    token_in,
    write_jwks,
)

HOP = "http.server"


class Clock:
    """The minutes signatures are judged by, set by the test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.minutes = float(int(time.time() / 60))  # a minute boundary: exp = now + lifetime
        monkeypatch.setattr(_signing, "_now_minutes", lambda: self.minutes)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)


def _counting(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[int]:
    """Count the calls of ``module.name`` (a list holding the count)."""
    calls = [0]
    original: Callable[..., Any] = getattr(module, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def _sent(hop: str | None = "http.client") -> str | None:
    """The token the current context leaves with on a ``hop`` hop."""
    carrier: dict[str, str] = {}
    oi.inject(carrier, hop=hop)
    return token_in(carrier)


def _sent_from(ctx: Context, hop: str | None = "http.client") -> str | None:
    """The token ``ctx`` leaves with on a ``hop`` hop."""
    carrier: dict[str, str] = {}
    oi.inject(carrier, hop=hop, context=ctx)
    return token_in(carrier)


def _exp(token: str | None) -> int:
    assert token is not None
    return int(token.split(".")[2])


def _arrived(carrier: dict[str, str]) -> tuple[oi.Identity | None, str | None]:
    """(identity admitted, reject reason) on a receiving hop whose instrumentation made its
    span: the path transports take, where the header alone decides (and is remembered)."""
    ctx = oi.extract(carrier, hop=HOP, trace_context=False)
    state = oi.hop_state(ctx)
    assert state is not None
    return oi.get_identity(ctx), state.reason


def _reloading_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys files are looked at on every call, not every few seconds (the test rewrites one)."""
    monkeypatch.setattr(_keys, "CHECK_INTERVAL", 0.0)


class TestSenderReusesItsToken:
    def test_calls_from_one_context_send_one_token_signed_once(
        self, monkeypatch: pytest.MonkeyPatch, clock: Clock
    ) -> None:
        oi.configure(signing_keys=f"k1:{HMAC_A}")
        signatures = _counting(monkeypatch, _signing, "_signature")
        looked_up = _counting(monkeypatch, _signing, "minted")
        with oi.use_identity(user_id="u", tenant_id="t"):
            tokens = {_sent() for _ in range(5)}
        assert len(tokens) == 1 and None not in tokens
        assert signatures[0] == 1
        assert looked_up[0] == 1  # the context's signed baggage, remembered

    def test_a_token_is_renewed_once_less_than_half_its_life_remains(self, clock: Clock) -> None:
        oi.configure(signing_keys=f"k1:{HMAC_A}", token_ttl=600)  # ten minutes
        with oi.use_identity(user_id="u"):
            first = _sent()
            assert _exp(first) == clock.minutes + 10
            clock.minutes += 4.9  # more than half its life left
            assert _sent() == first
            clock.minutes += 0.2  # less than half
            renewed = _sent()
        assert renewed != first
        assert _exp(renewed) == int(clock.minutes) + 10

    def test_distinct_identities_never_share_a_token(self, clock: Clock) -> None:
        oi.configure(signing_keys=f"k1:{HMAC_A}")
        sent = {}
        for user in ("alice", "bob", "alice"):
            with oi.use_identity(user_id=user, tenant_id="acme"):
                sent.setdefault(user, set()).add(_sent())
        assert len(sent["alice"]) == 1 and len(sent["bob"]) == 1
        assert sent["alice"] != sent["bob"]
        oi.configure(inbound="verify")
        for user in ("alice", "bob"):
            carrier = carrier_for(user_id=user, tenant_id="acme")
            assert _arrived(carrier) == (oi.Identity(user, "acme", verified=True), None)

    def test_a_queue_hop_and_a_sync_hop_each_get_their_own_lifetime(self, clock: Clock) -> None:
        oi.configure(signing_keys=f"k1:{HMAC_A}", token_ttl=300, queue_token_ttl=3600)
        with oi.use_identity(user_id="u"):
            lifetimes = [_exp(_sent(hop)) - clock.minutes for hop in ("grpc.client", "task") * 2]
        assert lifetimes == [5, 60, 5, 60]

    def test_a_signed_context_sent_again_keeps_its_token_until_renewal(self, clock: Clock) -> None:
        oi.configure(signing_keys=f"k1:{HMAC_A}", token_ttl=600)
        with oi.use_identity(user_id="u"):
            out = outgoing_context(otel_context.get_current())  # as a transport hands it on
        first = _sent_from(out)
        assert _sent_from(out) == first
        assert _exp(_sent_from(out, "queue.publish")) == clock.minutes + 60 * 24  # its own ttl
        clock.minutes += 5.1
        renewed = _sent_from(out)
        assert renewed != first and _exp(renewed) == int(clock.minutes) + 10

    def test_a_settings_change_mints_again(self, clock: Clock) -> None:
        oi.configure(signing_keys=f"k1:{HMAC_A}", token_ttl=300)
        with oi.use_identity(user_id="u"):
            first = _sent()
            oi.configure(token_ttl=900)
            longer = _sent()
            oi.configure(signing_keys=f"k2:{HMAC_B}")
            other_key = _sent()
        assert _exp(first) == clock.minutes + 5
        assert _exp(longer) == clock.minutes + 15
        assert (other_key or "").startswith("v1.k2.")

    def test_a_keys_file_reload_mints_with_the_new_key(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, clock: Clock
    ) -> None:
        _reloading_every_call(monkeypatch)
        path = write_jwks(tmp_path / "k.json", oct_jwk("old"))
        oi.configure(keys_file=str(path))
        with oi.use_identity(user_id="u"):
            assert (_sent() or "").startswith("v1.old.")
            write_jwks(path, oct_jwk("new", b"n" * 32))
            assert (_sent() or "").startswith("v1.new.")


class TestReceiverRemembersAVerdict:
    def test_a_verified_header_is_verified_once_until_its_token_expires(
        self, monkeypatch: pytest.MonkeyPatch, clock: Clock
    ) -> None:
        oi.configure(signing_keys=f"k1:{HMAC_A}", inbound="verify", token_ttl=300)
        carrier = carrier_for(user_id="u")
        verified = _counting(monkeypatch, _signing, "verdict")
        for _ in range(3):
            assert _arrived(carrier) == (oi.Identity("u", verified=True), None)
        assert verified[0] == 1
        clock.minutes += 4.99  # still valid: the remembered verdict
        assert _arrived(carrier) == (oi.Identity("u", verified=True), None)
        assert verified[0] == 1
        clock.minutes += 0.01  # its expiry: judged again
        assert _arrived(carrier) == (None, "expired")
        assert verified[0] == 2

    def test_an_expired_verdict_is_not_remembered(
        self, monkeypatch: pytest.MonkeyPatch, clock: Clock
    ) -> None:
        oi.configure(signing_keys=f"k1:{HMAC_A}", inbound="verify", token_ttl=60)
        carrier = carrier_for(user_id="u")
        clock.minutes += 2
        verified = _counting(monkeypatch, _signing, "verdict")
        assert _arrived(carrier) == (None, "expired")
        assert _arrived(carrier) == (None, "expired")
        assert verified[0] == 2

    def test_a_removed_key_invalidates_what_it_verified(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, clock: Clock
    ) -> None:
        _reloading_every_call(monkeypatch)
        old, new = ed25519_private("old"), ed25519_private("new")
        oi.configure(keys_file=str(write_jwks(tmp_path / "old.json", old)))
        carrier = carrier_for(user_id="u")
        path = write_jwks(tmp_path / "verifier.json", public_of(old), public_of(new))
        oi.configure(keys_file=str(path))
        assert _arrived(carrier) == (oi.Identity("u", verified=True), None)
        assert _arrived(carrier) == (oi.Identity("u", verified=True), None)
        write_jwks(path, public_of(new))
        assert _arrived(carrier) == (None, "unknown_key")

    def test_a_bad_signature_is_remembered_for_its_key_set_only(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, clock: Clock
    ) -> None:
        _reloading_every_call(monkeypatch)
        oi.configure(keys_file=str(write_jwks(tmp_path / "a.json", oct_jwk("k", b"a" * 32))))
        forged = carrier_for(user_id="u")
        path = write_jwks(tmp_path / "b.json", oct_jwk("k", b"b" * 32))
        oi.configure(keys_file=str(path), inbound="verify")
        verified = _counting(monkeypatch, _signing, "verdict")
        assert _arrived(forged) == (None, "bad_signature")
        assert _arrived(forged) == (None, "bad_signature")
        assert verified[0] == 1
        write_jwks(path, oct_jwk("k", b"a" * 32))  # the key it was signed with, after all
        assert _arrived(forged) == (oi.Identity("u", verified=True), None)
        assert verified[0] == 2

    def test_a_settings_change_judges_the_header_again(self, clock: Clock) -> None:
        oi.configure(signing_keys=f"k1:{HMAC_A}", inbound="verify")
        carrier = carrier_for(user_id="u")
        assert _arrived(carrier) == (oi.Identity("u", verified=True), None)
        oi.configure(signing_keys=f"k1:{HMAC_B}")
        assert _arrived(carrier) == (None, "bad_signature")

    def test_a_remembered_arrival_is_shared_while_it_holds(self, clock: Clock) -> None:
        oi.configure(signing_keys=f"k1:{HMAC_A}", inbound="verify", token_ttl=300)
        header = carrier_for(user_id="u")["baggage"]
        settings = oi.get_settings()
        first = _receiving.arrival_for(header, HOP, settings)
        assert _receiving.arrival_for(header, HOP, settings) is first
        assert first.until == clock.minutes + 5
        clock.minutes = first.until
        assert _receiving.arrival_for(header, HOP, settings) is not first
