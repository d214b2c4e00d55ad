"""The command line: demo, doctor, keygen; and the auto-instrumentation entry point."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import otel_identity as oi
from otel_identity import _config, _keys
from otel_identity._cli import main

BIN = Path(sys.executable).parent


def test_demo_shows_identity_on_each_hop_and_one_missing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert out.count("identity.missing(") == 1
    assert "demo: OK" in out
    for span in ("POST /reports", "build sales", "process sales"):
        line = next(line for line in out.splitlines() if span in line)
        assert "u-1" in line and "acme" in line, line


def test_demo_command_exits_zero_as_installed() -> None:
    result = subprocess.run(
        [str(BIN / "otel-identity"), "demo"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "identity.missing(queue.consume)" in result.stdout


def test_doctor_prints_effective_configuration(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_IDENTITY_TENANT_KEY", "org.id")
    from otel_identity import _config

    _config.reset_settings()
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "tenant_key" in out and "org.id" in out
    assert "inbound=trust" in out  # the unsafe-combination warning
    assert "ok    otel_identity_grpc: available" in out  # what can be active here


def test_doctor_reports_a_bad_environment_instead_of_crashing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_IDENTITY_INBOUND", "sometimes")
    from otel_identity import _config

    _config.reset_settings()
    assert main(["doctor"]) == 2
    assert "OTEL_IDENTITY_INBOUND" in capsys.readouterr().out


def test_keygen_prints_a_key_that_configure_accepts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen"]) == 0
    line = capsys.readouterr().out.strip()
    kid, _, key = line.partition(":")
    assert len(base64.b64decode(key)) == 32
    assert oi.configure(signing_keys=line).signing_keys[kid] == base64.b64decode(key)


def test_core_instrumentor_is_idempotent_and_reversible() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = oi.IdentityInstrumentor()
    tracer = provider.get_tracer("t")

    def user_attr() -> object:
        exporter.clear()
        with oi.use_identity(user_id="u"), tracer.start_as_current_span("s"):
            pass
        return (exporter.get_finished_spans()[0].attributes or {}).get("user.id")

    try:
        instrumentor.instrument(tracer_provider=provider)
        instrumentor.instrument(tracer_provider=provider)
        assert user_attr() == "u"
        assert len(provider._active_span_processor._span_processors) == 2
        instrumentor.uninstrument()
        assert user_attr() is None
        instrumentor.instrument(tracer_provider=provider)
        assert user_attr() == "u"
        assert len(provider._active_span_processor._span_processors) == 2
    finally:
        instrumentor.uninstrument()


def test_opentelemetry_instrument_needs_no_code_change(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(
        textwrap.dedent("""
        from opentelemetry import baggage, context, propagate, trace
        # An incoming request's headers, as any instrumented server would extract them:
        ctx = propagate.extract({"baggage": "user.id=u-7,tenant.id=acme"})
        context.attach(ctx)
        with trace.get_tracer("app").start_as_current_span("handler"):
            pass
    """)
    )
    env = {
        **os.environ,
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "",
    }
    result = subprocess.run(
        [str(BIN / "opentelemetry-instrument"), sys.executable, str(app)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert '"user.id": "u-7"' in result.stdout, result.stdout + result.stderr
    assert '"tenant.id": "acme"' in result.stdout


def test_demo_queue_hop_through_celery_on_a_real_broker(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tests.services import need_service

    need_service("redis", 6379)
    assert main(["demo", "--broker", "redis://127.0.0.1:6379/9"]) == 0
    out = capsys.readouterr().out
    assert "Celery via redis://" in out
    assert out.count("identity.missing(") == 1
    assert "cleanup: <no user>" in out and "sales: Ada" in out


class TestKeygenAndDoctorKeys:
    def test_keygen_ed25519_prints_a_jwk_set_with_one_private_key(
        self, capsys: pytest.CaptureFixture[str], tmp_path: Path
    ) -> None:
        assert main(["keygen", "--ed25519"]) == 0
        document = json.loads(capsys.readouterr().out)
        (jwk,) = document["keys"]
        assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519" and "d" in jwk
        path = tmp_path / "k.json"
        path.write_text(json.dumps(document), encoding="utf-8")
        oi.configure(keys_file=str(path))  # a keys file configure accepts

    def test_keygen_public_keeps_public_ed25519_keys_only(
        self, capsys: pytest.CaptureFixture[str], tmp_path: Path
    ) -> None:
        private = _keys.new_ed25519_jwks("ed")["keys"][0]
        public = {**_keys.new_ed25519_jwks("pub")["keys"][0]}
        del public["d"]
        oct_key = {"kty": "oct", "kid": "hm", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"}
        path = tmp_path / "k.json"
        path.write_text(json.dumps({"keys": [oct_key, private, public]}), encoding="utf-8")
        assert main(["keygen", "--public", str(path)]) == 0
        out = capsys.readouterr().out
        document = json.loads(out)
        assert [k["kid"] for k in document["keys"]] == ["ed", "pub"]
        assert all("d" not in k and k["kty"] == "OKP" for k in document["keys"])
        assert private["d"] not in out and oct_key["k"] not in out
        assert {k["x"] for k in document["keys"]} == {private["x"], public["x"]}

    def test_keygen_public_of_a_bad_file_exits_2(
        self, capsys: pytest.CaptureFixture[str], tmp_path: Path
    ) -> None:
        assert main(["keygen", "--public", str(tmp_path / "absent.json")]) == 2

    def test_doctor_warns_about_trust_with_keys(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("OTEL_IDENTITY_INBOUND", "trust")
        monkeypatch.setenv(
            "OTEL_IDENTITY_SIGNING_KEYS", "k1:" + base64.b64encode(b"k" * 32).decode()
        )
        _config.reset_settings()
        assert main(["doctor"]) == 0
        out = capsys.readouterr().out
        assert "inbound=trust with keys" in out
        assert base64.b64encode(b"k" * 32).decode() not in out

    def test_doctor_exits_2_on_a_duplicate_kid(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        path = tmp_path / "k.json"
        path.write_text(json.dumps(_keys.new_ed25519_jwks("same")), encoding="utf-8")
        monkeypatch.setenv("OTEL_IDENTITY_KEYS_FILE", str(path))
        monkeypatch.setenv(
            "OTEL_IDENTITY_SIGNING_KEYS", "same:" + base64.b64encode(b"k" * 32).decode()
        )
        _config.reset_settings()
        assert main(["doctor"]) == 2
        assert "duplicate key id 'same'" in capsys.readouterr().out

    def test_doctor_exits_2_on_signing_keys_and_signing_keys_file(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        path = tmp_path / "keys"
        path.write_text("k1:" + base64.b64encode(b"k" * 32).decode(), encoding="utf-8")
        monkeypatch.setenv("OTEL_IDENTITY_SIGNING_KEYS_FILE", str(path))
        monkeypatch.setenv(
            "OTEL_IDENTITY_SIGNING_KEYS", "k2:" + base64.b64encode(b"j" * 32).decode()
        )
        _config.reset_settings()
        assert main(["doctor"]) == 2
        assert "not both" in capsys.readouterr().out

    def test_doctor_exits_2_on_a_malformed_keys_file(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        path = tmp_path / "k.json"
        path.write_text("{", encoding="utf-8")
        monkeypatch.setenv("OTEL_IDENTITY_KEYS_FILE", str(path))
        _config.reset_settings()
        assert main(["doctor"]) == 2
        assert "keys file" in capsys.readouterr().out
