"""Keys: the JWK Set file, its union with signing_keys, reloading, failing closed, no leaks."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import otel_identity as oi
from otel_identity import _config, _keys
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


def _reason(carrier: dict[str, str]) -> str | None:
    state = oi.hop_state(oi.extract(carrier, hop="http.server"))
    assert state is not None
    return state.reason


def _eventually(check: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Poll ``check`` until it holds or ``seconds`` pass (the reload contract is 10 s)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


class TestKeysFile:
    def test_first_key_that_can_mint_mints_and_every_key_verifies(self, tmp_path: Path) -> None:
        other = ed25519_private("other")
        minter = ed25519_private("minter")
        path = write_jwks(tmp_path / "k.json", public_of(other), minter, oct_jwk("hm"))
        oi.configure(keys_file=str(path))
        keys = _keys.current_keys(oi.get_settings())
        assert keys is not None and keys.minter is not None and keys.minter.kid == "minter"
        assert list(keys.keys) == ["other", "minter", "hm"]
        assert (token_in(carrier_for(user_id="u")) or "").startswith("v2.minter.")

    def test_keys_file_comes_before_signing_keys(self, tmp_path: Path) -> None:
        path = write_jwks(tmp_path / "k.json", ed25519_private("ed"))
        oi.configure(keys_file=str(path), signing_keys=f"hm:{HMAC_A}")
        assert (token_in(carrier_for(user_id="u")) or "").startswith("v2.ed.")
        oi.configure(keys_file=str(write_jwks(path, public_of(ed25519_private("ed")))))
        assert (token_in(carrier_for(user_id="u")) or "").startswith("v1.hm.")

    def test_public_keys_only_verify_and_never_mint(self, tmp_path: Path) -> None:
        path = write_jwks(tmp_path / "k.json", public_of(ed25519_private("pub")))
        oi.configure(keys_file=str(path))
        assert oi.get_settings().effective_inbound == "verify"
        assert token_in(carrier_for(user_id="u")) is None

    def test_oct_key_in_the_file_signs_v1(self, tmp_path: Path) -> None:
        oi.configure(keys_file=str(write_jwks(tmp_path / "k.json", oct_jwk("hm"))))
        carrier = carrier_for(user_id="u")
        assert (token_in(carrier) or "").startswith("v1.hm.")
        assert _reason(carrier) is None

    @pytest.mark.parametrize(
        "document",
        [
            "not json",
            "[]",
            '{"keys": {}}',
            '{"keys": [1]}',
            '{"keys": [{"kty": "oct", "k": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}]}',
            '{"keys": [{"kty": "oct", "kid": "a.b", "k": "AAAAAAAAAAAAAAAAAAAAAAA"}]}',
            '{"keys": [{"kty": "oct", "kid": "' + "k" * 65 + '", "k": "AAAAAAAAAAAAAAAAAAAAAA"}]}',
            '{"keys": [{"kty": "oct", "kid": "a", "k": "c2hvcnQ"}]}',
            '{"keys": [{"kty": "oct", "kid": "a", "k": "!!!!"}]}',
            '{"keys": [{"kty": "oct", "kid": "a", "alg": "HS512", "k": "AAAAAAAAAAAAAAAAAAAAAA"}]}',
            '{"keys": [{"kty": "RSA", "kid": "a", "n": "x", "e": "AQAB"}]}',
            '{"keys": [{"kty": "OKP", "crv": "X25519", "kid": "a", "x": "AAAA"}]}',
            '{"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "a", "x": "AAAA"}]}',
            '{"keys": [{"kty": "oct", "kid": "a", "use": "enc", "k": "AAAAAAAAAAAAAAAAAAAAAA"}]}',
            "[" * 100_000 + "]" * 100_000,
            '{"keys": []}' + " " * (1 << 20),
        ],
    )
    def test_malformed_keys_file_is_a_configuration_error(
        self, tmp_path: Path, document: str
    ) -> None:
        path = tmp_path / "k.json"
        path.write_text(document, encoding="utf-8")
        with pytest.raises(oi.ConfigurationError):
            oi.configure(keys_file=str(path))

    def test_private_key_that_does_not_match_its_public_key_is_refused(
        self, tmp_path: Path
    ) -> None:
        mixed = {**ed25519_private("a"), "x": ed25519_private("b")["x"]}
        with pytest.raises(oi.ConfigurationError, match="does not belong"):
            oi.configure(keys_file=str(write_jwks(tmp_path / "k.json", mixed)))

    def test_missing_keys_file_is_a_configuration_error(self, tmp_path: Path) -> None:
        with pytest.raises(oi.ConfigurationError, match="cannot read"):
            oi.configure(keys_file=str(tmp_path / "absent.json"))

    def test_duplicate_kid_within_the_file_is_an_error(self, tmp_path: Path) -> None:
        path = write_jwks(tmp_path / "k.json", oct_jwk("same"), ed25519_private("same"))
        with pytest.raises(oi.ConfigurationError, match="duplicate key id 'same'"):
            oi.configure(keys_file=str(path))

    def test_duplicate_kid_across_file_and_signing_keys_is_an_error(self, tmp_path: Path) -> None:
        path = write_jwks(tmp_path / "k.json", ed25519_private("same"))
        with pytest.raises(oi.ConfigurationError, match="duplicate key id 'same'"):
            oi.configure(keys_file=str(path), signing_keys=f"same:{HMAC_A}")

    def test_duplicate_kid_in_signing_keys_is_an_error(self) -> None:
        with pytest.raises(oi.ConfigurationError, match="duplicate"):
            oi.configure(signing_keys=f"k:{HMAC_A},k:{HMAC_B}")

    def test_keys_file_from_the_environment(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        path = write_jwks(tmp_path / "k.json", ed25519_private("env"))
        monkeypatch.setenv("OTEL_IDENTITY_KEYS_FILE", str(path))
        monkeypatch.setenv("OTEL_IDENTITY_QUEUE_TOKEN_TTL", "600")
        _config.reset_settings()
        settings = oi.get_settings()
        assert settings.keys_file == str(path) and settings.queue_token_ttl == 600
        assert settings.effective_inbound == "verify"


class TestEnvironment:
    def test_signing_keys_and_signing_keys_file_together_are_an_error(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        path = tmp_path / "keys"
        path.write_text(f"k1:{HMAC_A}", encoding="utf-8")
        monkeypatch.setenv("OTEL_IDENTITY_SIGNING_KEYS", f"k2:{HMAC_B}")
        monkeypatch.setenv("OTEL_IDENTITY_SIGNING_KEYS_FILE", str(path))
        _config.reset_settings()
        with pytest.raises(oi.ConfigurationError, match="not both"):
            oi.get_settings()

    def test_a_kid_outside_the_charset_is_refused_without_echoing_it(self) -> None:
        secret = base64.b64encode(b"s" * 32).decode()  # a key pasted where the kid goes
        with pytest.raises(oi.ConfigurationError) as info:
            oi.configure(signing_keys=f"{secret}/x:{HMAC_A}")
        assert secret not in str(info.value)


class TestNoKeyMaterialAnywhere:
    def test_settings_repr_shows_key_ids_only(self, tmp_path: Path) -> None:
        private = ed25519_private("ed")
        path = write_jwks(tmp_path / "k.json", private, oct_jwk("oc", b"q" * 32))
        settings = oi.configure(signing_keys=f"hm:{HMAC_A}", keys_file=str(path))
        keys = _keys.current_keys(settings)
        texts = [repr(settings), str(settings), repr(keys), repr(settings.signing_keys)]
        texts += [repr(key) for key in (keys.keys.values() if keys else ())]
        secrets = [HMAC_A, private["d"], oct_jwk("oc", b"q" * 32)["k"], repr(b"a" * 32)]
        for text in texts:
            assert "hm" in text or "ed" in text or "oc" in text
            for secret in secrets:
                assert secret not in text

    def test_settings_built_directly_show_key_ids_only(self) -> None:
        settings = oi.Settings(signing_keys={"direct": b"z" * 32})
        assert "direct" in repr(settings) and repr(b"z" * 32) not in repr(settings)
        assert settings.has_keys and settings.effective_inbound == "verify"

    def test_errors_and_logs_about_a_bad_key_never_show_its_material(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        bad = {**ed25519_private("a"), "x": ed25519_private("b")["x"]}
        path = write_jwks(tmp_path / "k.json", bad)
        with pytest.raises(oi.ConfigurationError) as info:
            oi.configure(keys_file=str(path))
        assert bad["d"] not in str(info.value) and bad["x"] not in str(info.value)


class TestReload:
    def test_added_key_verifies_and_removed_key_stops_within_ten_seconds(
        self, tmp_path: Path
    ) -> None:
        old, new = ed25519_private("old"), ed25519_private("new")
        minted = {}
        for key in (old, new):
            oi.configure(keys_file=str(write_jwks(tmp_path / f"{key['kid']}.json", key)))
            minted[key["kid"]] = carrier_for(user_id="u")
        path = write_jwks(tmp_path / "verifier.json", public_of(old))
        oi.configure(keys_file=str(path))
        assert _reason(minted["old"]) is None
        assert _reason(minted["new"]) == "unknown_key"
        write_jwks(path, public_of(old), public_of(new))
        assert _eventually(lambda: _reason(minted["new"]) is None)
        write_jwks(path, public_of(new))
        assert _eventually(lambda: _reason(minted["old"]) == "unknown_key")
        assert _reason(minted["new"]) is None

    def test_hops_do_not_touch_the_file_system_each_time(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        private = ed25519_private("k")
        oi.configure(keys_file=str(write_jwks(tmp_path / "k.json", private)))
        carrier = carrier_for(user_id="u")
        stats: list[str] = []
        real_stat = _keys.os.stat

        def counting_stat(path: Any) -> Any:
            stats.append(str(path))
            return real_stat(path)

        monkeypatch.setattr(_keys, "os", SimpleNamespace(stat=counting_stat))
        started = time.monotonic()
        for _ in range(2000):
            assert _reason(carrier) is None
            carrier_for(user_id="u")
        elapsed = time.monotonic() - started
        assert len(stats) <= 1 + elapsed / _keys.CHECK_INTERVAL

    def test_unusable_file_at_run_time_fails_closed_with_one_log_line(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        private = ed25519_private("k")
        path = write_jwks(tmp_path / "k.json", private)
        oi.configure(keys_file=str(path))
        carrier = carrier_for(user_id="u")
        assert _reason(carrier) is None
        path.write_text('{"keys": [{"kty": "oct", "kid": "half-writ', encoding="utf-8")
        caplog.set_level(logging.INFO, logger="otel_identity")
        assert _eventually(lambda: _reason(carrier) == "unknown_key")
        assert token_in(carrier_for(user_id="u")) is None  # nothing minted either
        for _ in range(50):
            _reason(carrier)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "unusable" in errors[0].getMessage()
        assert private["d"] not in caplog.text
        write_jwks(path, private)  # fixed: back to work, no restart
        assert _eventually(lambda: _reason(carrier) is None)
        assert token_in(carrier_for(user_id="u")) is not None

    def test_bad_keys_file_named_by_the_environment_fails_closed_on_the_request_path(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        private = ed25519_private("k")
        oi.configure(keys_file=str(write_jwks(tmp_path / "good.json", private)))
        carrier = carrier_for(user_id="u")
        bad = tmp_path / "bad.json"
        bad.write_text("{not json", encoding="utf-8")
        monkeypatch.setenv("OTEL_IDENTITY_KEYS_FILE", str(bad))
        _config.reset_settings()
        for _ in range(20):  # (conftest fails the test on any swallowed internal error)
            assert _reason(carrier) == "unknown_key"
            assert token_in(carrier_for(user_id="u")) is None
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "unusable" in errors[0].getMessage()

    def test_keys_file_deleted_at_run_time_fails_closed(self, tmp_path: Path) -> None:
        path = write_jwks(tmp_path / "k.json", ed25519_private("k"))
        oi.configure(keys_file=str(path))
        carrier = carrier_for(user_id="u")
        path.unlink()
        assert _eventually(lambda: _reason(carrier) == "unknown_key")


def test_keygen_output_is_a_valid_keys_file(tmp_path: Path) -> None:
    document = _keys.new_ed25519_jwks("fresh")
    path = tmp_path / "k.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    (key,) = _keys.read_jwks(str(path))
    assert key.kid == "fresh" and key.private
