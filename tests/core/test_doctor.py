"""``otel-identity doctor``: real mistakes are errors (exit 2), doubtful ones warnings (exit 0,
listed), each in one line that says what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from otel_identity import _checks
from otel_identity._cli import main


def _doctor(capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    status = main(["doctor"])
    lines = capsys.readouterr().out.splitlines()
    return status, lines


def _lines(lines: list[str], level: str) -> list[str]:
    return [line for line in lines if line.strip().startswith(level)]


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("OTEL_IDENTITY_RESOLVER", "nomodule:fn", "'nomodule:fn' cannot be imported"),
        ("OTEL_IDENTITY_RESOLVER", "logging:DEBUG", "is not callable"),
        ("OTEL_IDENTITY_FLASK_TENANT_OF", "attr:no such", "not an attribute name"),
        ("OTEL_IDENTITY_FLASK_TENANT_OF", "nomodule:fn", "cannot import it"),
    ],
)
def test_a_setting_that_cannot_be_loaded_is_an_error(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    says: str,
) -> None:
    monkeypatch.setenv(variable, value)
    status, lines = _doctor(capsys)
    assert status == 2
    (error,) = _lines(lines, "ERROR")
    assert variable in error and says in error
    assert lines[-1].startswith("1 error(s)")


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("OTEL_IDENTITY_EGRESS_STRIP_ALL_BAGGAGE", "maybe", "must be true or false, got 'maybe'"),
        ("OTEL_IDENTITY_TOKEN_TTL", "5m", "must be whole seconds"),
        ("OTEL_IDENTITY_EGRESS_ALLOW", "https://api.example.com/v1", "is a URL; list the host"),
    ],
)
def test_an_invalid_value_is_an_error_naming_the_variable(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    says: str,
) -> None:
    monkeypatch.setenv(variable, value)
    status, lines = _doctor(capsys)
    assert status == 2
    (line,) = lines  # one clear line, no traceback
    assert line.startswith(f"configuration error: {variable}:") and says in line


@pytest.mark.parametrize(
    ("allow", "warned"),
    [
        ("*", ["'*', which matches no destination", "loopback included"]),
        ("*.com,*.internal", ["'*.com': every host under a public suffix"]),
        ("*.co.uk,*.example.co.uk", ["'*.co.uk': every host under a public suffix"]),
    ],
)
def test_a_wildcard_that_reaches_everyone_or_no_one_is_a_warning(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    allow: str,
    warned: list[str],
) -> None:
    monkeypatch.setenv("OTEL_IDENTITY_EGRESS_ALLOW", allow)
    status, lines = _doctor(capsys)
    assert status == 0
    warnings = [w for w in _lines(lines, "WARN") if "egress_allow" in w]
    assert len(warnings) == 1, warnings
    assert all(part in warnings[0] for part in warned), warnings


@pytest.mark.parametrize(
    ("suffix", "public"),
    [
        ("com", True),
        ("de", True),
        ("co.uk", True),
        ("com.au", True),
        ("svc", False),
        ("internal", False),
        ("svc.cluster.local", False),
        ("example.com", False),
        ("corp.example.co.uk", False),
    ],
)
def test_public_suffixes_are_told_from_private_ones(suffix: str, public: bool) -> None:
    assert _checks.is_public_suffix(suffix) is public


def test_a_boundary_without_its_span_instrumentation_is_a_warning(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """grpcio is installed here; without OpenTelemetry's gRPC instrumentation no gRPC span is
    exported, so doctor names the package and the extra that brings it."""
    installed = _checks._installed
    monkeypatch.setattr(
        _checks,
        "_installed",
        lambda name: name != "opentelemetry-instrumentation-grpc" and installed(name),
    )
    status, lines = _doctor(capsys)
    assert status == 0
    (warning,) = [w for w in _lines(lines, "WARN") if "grpcio" in w]
    assert "opentelemetry-instrumentation-grpc is not installed" in warning
    assert "pip install 'otel-identity[grpc]'" in warning


def test_with_every_span_instrumentation_installed_no_boundary_is_flagged(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, lines = _doctor(capsys)
    assert status == 0
    assert not [w for w in _lines(lines, "WARN") if "is not installed" in w]
    assert _lines(lines, "ERROR") == []


def test_a_resolver_in_the_current_directory_is_found_as_the_app_would_find_it(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    (tmp_path / "doctor_probe_users.py").write_text("def load(identity):\n    return None\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OTEL_IDENTITY_RESOLVER", "doctor_probe_users:load")
    status, lines = _doctor(capsys)
    assert status == 0, lines
    assert any("ok    resolver doctor_probe_users:load imports" in line for line in lines)


def test_without_a_configurator_opentelemetry_instrument_exports_nothing_and_doctor_says_so(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = _checks.metadata.entry_points

    def entry_points(**selection: str) -> object:
        if selection.get("group") == "opentelemetry_configurator":
            return []
        return real(**selection)

    monkeypatch.setattr(_checks.metadata, "entry_points", entry_points)
    status, lines = _doctor(capsys)
    assert status == 0
    (warning,) = [w for w in _lines(lines, "WARN") if "configurator" in w]
    assert "opentelemetry-distro" in warning and "no exporter" in warning
