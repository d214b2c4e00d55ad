"""Settings: environment at first use, configure() in code, validation."""

from __future__ import annotations

import base64

import pytest

import otel_identity as oi
from otel_identity import _config


def test_defaults_match_the_design() -> None:
    s = oi.get_settings()
    assert s.identity_keys == ("user.id", "tenant.id", "session.id", "user.roles")
    assert s.required_hops == {"http.server", "grpc.server", "queue.consume", "task"}
    assert s.effective_inbound == "trust"
    assert s.token_ttl == 300 and s.span_attributes == "id"
    assert "*.svc.cluster.local" in s.egress_allow


def test_environment_is_read_at_first_use_not_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    _config.reset_settings()
    monkeypatch.setenv("OTEL_IDENTITY_TENANT_KEY", "org.id")
    monkeypatch.setenv("OTEL_IDENTITY_REQUIRED_HOPS", "http.server, thread")
    monkeypatch.setenv("OTEL_IDENTITY_ANONYMOUS_ROUTES", "/healthz,/metrics")
    monkeypatch.setenv("OTEL_IDENTITY_SPAN_ATTRIBUTES", "hash")
    s = oi.get_settings()
    assert s.tenant_key == "org.id"
    assert s.required_hops == {"http.server", "thread"}
    assert s.anonymous_routes == ("/healthz", "/metrics")
    assert s.span_attributes == "hash"
    assert oi.get_identity(oi.set_identity(tenant_id="t")) == oi.Identity(tenant_id="t")


def test_configured_keys_are_used_on_the_wire() -> None:
    oi.configure(tenant_key="org.id")
    carrier: dict[str, str] = {}
    oi.inject(carrier, context=oi.set_identity(tenant_id="acme"))
    assert carrier["baggage"] == "org.id=acme"
    assert oi.get_identity(oi.extract(carrier, hop="manual")) == oi.Identity(tenant_id="acme")


def test_signing_keys_from_a_file_turn_verify_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    key = base64.b64encode(b"k" * 32).decode()
    path = tmp_path / "keys"  # type: ignore[operator]
    path.write_text(f"k1:{key}\n")
    monkeypatch.setenv("OTEL_IDENTITY_SIGNING_KEYS_FILE", str(path))
    _config.reset_settings()
    assert oi.get_settings().effective_inbound == "verify"
    assert oi.get_settings().signing_keys == {"k1": b"k" * 32}


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("required_hops", "http.server,bogus"),
        ("inbound", "maybe"),
        ("inbound", "verify"),
        ("span_attributes", "all"),
        ("token_ttl", "soon"),
        ("token_ttl", 0),
        ("signing_keys", "nokid"),
        ("signing_keys", "k:not-base64!"),
        ("signing_keys", "k:" + base64.b64encode(b"short").decode()),
        ("user_key", "bad key"),
        ("egress_allow", "10.0.0.0/99"),
        ("resolver", "no_colon"),
        ("tenant_key", "user.id"),
        ("egress_strip_all_baggage", "maybe"),
        ("egress_strip_all_baggage", ""),
        ("token_ttl", True),
        ("token_ttl", "1.5"),
        ("token_ttl", 1.5),
    ],
)
def test_invalid_settings_are_refused_with_a_clear_error(setting: str, value: object) -> None:
    with pytest.raises(oi.ConfigurationError):
        oi.configure(**{setting: value})


def test_unknown_setting_is_refused() -> None:
    with pytest.raises(oi.ConfigurationError, match="unknown setting"):
        oi.configure(colour="blue")


def test_invalid_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_IDENTITY_INBOUND", "sometimes")
    _config.reset_settings()
    with pytest.raises(oi.ConfigurationError, match="OTEL_IDENTITY_INBOUND"):
        oi.get_settings()


def test_configure_keeps_unnamed_settings_and_returns_the_new_ones() -> None:
    oi.configure(tenant_key="org.id")
    s = oi.configure(span_attributes="none")
    assert s.tenant_key == "org.id" and s.span_attributes == "none"
    assert oi.get_settings() is s


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("1", True), ("Yes", True), ("on", True), ("false", False), ("0", False)],
)
def test_a_boolean_setting_takes_the_usual_spellings(value: str, expected: bool) -> None:
    assert oi.configure(egress_strip_all_baggage=value).egress_strip_all_baggage is expected


def test_a_url_in_the_allow_list_is_refused_with_what_to_write_instead() -> None:
    with pytest.raises(oi.ConfigurationError, match=r"is a URL; list the host \('billing.svc'\)"):
        oi.configure(egress_allow="https://billing.svc:8443/api")


def test_a_refused_environment_is_logged_once_and_refused_again_without_rereading(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_IDENTITY_TOKEN_TTL", "soon")
    _config.reset_settings()
    for _ in range(3):
        with pytest.raises(oi.ConfigurationError, match="OTEL_IDENTITY_TOKEN_TTL"):
            oi.get_settings()
    assert len([r for r in caplog.records if "invalid configuration" in r.getMessage()]) == 1
    monkeypatch.setenv("OTEL_IDENTITY_TOKEN_TTL", "60")
    _config.reset_settings()
    assert oi.get_settings().token_ttl == 60
