"""The command line: demo, doctor, keygen; and the auto-instrumentation entry point."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import otel_identity as oi
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
