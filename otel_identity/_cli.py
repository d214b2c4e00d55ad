"""The ``otel-identity`` command: demo, doctor, report, keygen."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from otel_identity import _config, _signing
from otel_identity._errors import ConfigurationError
from otel_identity.version import __version__


def _doctor() -> int:
    from opentelemetry import propagate, trace

    from otel_identity import _checks
    from otel_identity._instrumentor import carries_baggage

    try:
        settings = _config.environment_settings()
    except ConfigurationError as exc:
        print(f"configuration error: {exc}")
        return 2
    print(f"otel-identity {__version__}: effective configuration")
    for name in (
        "resolver",
        "user_key",
        "tenant_key",
        "session_key",
        "roles_key",
        "required_hops",
        "anonymous_routes",
        "inbound",
        "signing_keys",
        "token_ttl",
        "egress_allow",
        "egress_strip_all_baggage",
        "span_attributes",
    ):
        value = getattr(settings, name)
        if name == "inbound":
            value = f"{settings.effective_inbound}" + ("" if settings.inbound else " (default)")
        elif name == "signing_keys":
            value = ", ".join(value) + f" ({len(value)} key(s))" if value else "none"
        elif isinstance(value, (frozenset, tuple)):
            value = ", ".join(sorted(value) if isinstance(value, frozenset) else value) or "none"
        print(f"  {name:<26} {value}")
    print("checks")
    warnings = 0
    propagator = propagate.get_global_textmap()
    if carries_baggage(propagator):
        print("  ok    the global propagator carries W3C baggage")
    else:
        warnings += 1
        print("  WARN  the global propagator has no W3C baggage: identity will not cross processes")
    provider = trace.get_tracer_provider()
    print(f"  info  tracer provider: {type(provider).__name__}")
    for line in _instrumentors():
        print(line)
    if settings.effective_inbound == "trust" and "http.server" in settings.required_hops:
        warnings += 1
        print(
            "  WARN  inbound=trust: a service that faces the internet would believe any "
            "caller's baggage; use inbound=strip at the edge or signing keys (verify) inside"
        )
    if settings.effective_inbound == "verify" and settings.token_ttl > 3600:
        warnings += 1
        print("  WARN  token_ttl above one hour makes stolen tokens useful for long")
    if "0.0.0.0/0" in settings.egress_allow or "::/0" in settings.egress_allow:
        warnings += 1
        print("  WARN  egress_allow admits every address: identity may reach third parties")
    errors = 0
    for finding in _checks.findings(settings):
        print(finding.line())
        errors += finding.level == "error"
        warnings += finding.level == "warn"
    print(f"{errors} error(s), {warnings} warning(s)")
    return 2 if errors else 0


def _instrumentors() -> list[str]:
    """One line per otel-identity instrumentor: can it run here, and is it on?"""
    from importlib.metadata import entry_points

    from opentelemetry.instrumentation.dependencies import get_dependency_conflicts

    lines = []
    for ep in sorted(entry_points(group="opentelemetry_instrumentor"), key=lambda e: e.name):
        if not ep.value.startswith("otel_identity"):
            continue
        try:
            instrumentor = ep.load()()
            conflict = get_dependency_conflicts(instrumentor.instrumentation_dependencies())
        except Exception as exc:  # noqa: BLE001 - doctor reports, it does not crash
            lines.append(f"  WARN  {ep.name}: cannot load ({type(exc).__name__}: {exc})")
            continue
        if conflict is not None:
            lines.append(f"  info  {ep.name}: inactive here ({conflict})")
        else:
            state = "on" if instrumentor.is_instrumented_by_opentelemetry else "available"
            lines.append(f"  ok    {ep.name}: {state}")
    return lines


def _report(path: str, html_path: str | None) -> int:
    from otel_identity import _report as report

    try:
        with open(path, encoding="utf-8") as handle:
            spans = report.load(handle.read())
    except (OSError, ValueError) as exc:
        print(f"cannot read {path}: {exc}", file=sys.stderr)
        return 2
    result = report.analyse(spans)
    print(report.render_text(result), end="")
    if html_path:
        with open(html_path, "w", encoding="utf-8") as handle:
            handle.write(report.render_html(result))
        print(f"wrote {html_path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="otel-identity", description="User and tenant identity across every hop."
    )
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a multi-hop flow on loopback and print its trace")
    demo.add_argument("--export", metavar="PATH", help="write the spans (JSON lines) to PATH")
    demo.add_argument(
        "--broker", metavar="URL", help="queue hop through Celery on this broker (redis://...)"
    )
    sub.add_parser("doctor", help="print the effective configuration and checks")
    sub.add_parser("keygen", help="print a new signing key (kid:base64key)")
    report = sub.add_parser("report", help="identity coverage of exported traces")
    report.add_argument("file", help="OTLP JSON (lines) or ConsoleSpanExporter output")
    report.add_argument("--html", metavar="PATH", help="also write the report as a page")
    args = parser.parse_args(argv)
    if args.command == "demo":
        try:
            flow = importlib.import_module("otel_identity_demo")
        except ImportError as exc:
            print(f"the demo needs its extra: pip install 'otel-identity[demo]' ({exc})")
            return 2
        return int(flow.run(sys.stdout, export=args.export, broker=args.broker))
    if args.command == "doctor":
        return _doctor()
    if args.command == "report":
        return _report(args.file, args.html)
    if args.command == "keygen":
        import secrets

        print(f"k{secrets.token_hex(3)}:{_signing.new_key()}")
        return 0
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
