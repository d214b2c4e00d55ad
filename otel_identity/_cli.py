"""The ``otel-identity`` command: demo, doctor, report, keygen."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from otel_identity import _baggage_propagator, _config, _keys, _signing
from otel_identity._errors import ConfigurationError
from otel_identity.version import __version__


def _baggage_step_check(textmap: Any) -> int:
    """Doctor's line on the W3C baggage step the configured textmap gets once instrumented
    (IdentityInstrumentor puts otel-identity's in place of OpenTelemetry's); 1 if a warning."""
    status = _baggage_propagator.baggage_step_status(_baggage_propagator.replaced(textmap))
    if status == "ours":
        print(
            "  ok    the W3C baggage step is otel-identity's (identity_baggage); a textmap set "
            "later whose baggage step is not makes identity fail closed, with one log line"
        )
        return 0
    if status == "opaque":
        print(
            "  WARN  a propagator of unknown make reads the baggage header: identity is taken "
            "only from otel-identity's own parse; prefer OTEL_PROPAGATORS=tracecontext,"
            "identity_baggage"
        )
    else:
        print("  WARN  the global propagator has no W3C baggage: identity will not cross processes")
    return 1


_SHOWN_SETTINGS = (
    "resolver",
    "user_key",
    "tenant_key",
    "session_key",
    "roles_key",
    "required_hops",
    "anonymous_routes",
    "inbound",
    "signing_keys",
    "keys_file",
    "token_ttl",
    "queue_token_ttl",
    "egress_allow",
    "egress_strip_all_baggage",
    "span_attributes",
)


def _print_configuration(settings: _config.Settings) -> None:
    print(f"otel-identity {__version__}: effective configuration")
    for name in _SHOWN_SETTINGS:
        value = getattr(settings, name)
        if name == "inbound":
            value = f"{settings.effective_inbound}" + ("" if settings.inbound else " (default)")
        elif name == "signing_keys":
            value = ", ".join(value) + f" ({len(value)} key(s))" if value else "none"
        elif isinstance(value, (frozenset, tuple)):
            value = ", ".join(sorted(value) if isinstance(value, frozenset) else value) or "none"
        print(f"  {name:<26} {value}")


def _policy_warnings(settings: _config.Settings, keys: object) -> int:
    """Print a warning for each risky combination of settings; returns how many."""
    warnings = 0
    if settings.effective_inbound == "trust" and "http.server" in settings.required_hops:
        warnings += 1
        print(
            "  WARN  inbound=trust: a service that faces the internet would believe any "
            "caller's baggage; use inbound=strip at the edge or signing keys (verify) inside"
        )
    if settings.effective_inbound == "trust" and keys is not None:
        warnings += 1
        print(
            "  WARN  inbound=trust with keys: trusted identity is never signed here and "
            "arrives unverified downstream; use inbound=verify (or strip at the edge)"
        )
    if settings.effective_inbound == "verify" and settings.token_ttl > 3600:
        warnings += 1
        print("  WARN  token_ttl above one hour makes stolen tokens useful for long")
    if "0.0.0.0/0" in settings.egress_allow or "::/0" in settings.egress_allow:
        warnings += 1
        print("  WARN  egress_allow admits every address: identity may reach third parties")
    return warnings


def _doctor() -> int:
    from opentelemetry import propagate, trace

    from otel_identity import _checks

    try:
        settings = _config.environment_settings()
        keys = _keys.load(settings)  # a bad keys file or a duplicate key id is an error here
    except ConfigurationError as exc:
        print(f"configuration error: {exc}")
        return 2
    _print_configuration(settings)
    print("checks")
    warnings = 0
    warnings += _baggage_step_check(propagate.get_global_textmap())
    if keys is not None:
        minter = keys.minter.kid if keys.minter else "none: this service verifies only"
        print(f"  info  keys: {', '.join(keys.keys)}; mints with {minter}")
    provider = trace.get_tracer_provider()
    print(f"  info  tracer provider: {type(provider).__name__}")
    for line in _instrumentors():
        print(line)
    warnings += _policy_warnings(settings, keys)
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
    from otel_identity import _report_page

    try:
        with open(path, "rb") as handle:
            loaded = report.read(handle.read())
    except (OSError, ValueError) as exc:
        print(f"cannot read {path}: {exc}", file=sys.stderr)
        return 2
    if not loaded.spans:
        skipped = f" ({loaded.skipped} line(s) or value(s) that are not spans)"
        print(
            f"cannot read {path}: no spans found{skipped if loaded.skipped else ''}; expected "
            "OTLP JSON or protobuf, Zipkin v2 JSON or ConsoleSpanExporter output",
            file=sys.stderr,
        )
        return 2
    result = report.analyse(loaded.spans)
    result.skipped, result.format = loaded.skipped, loaded.format
    print(report.render_text(result), end="")
    if html_path:
        try:
            with open(html_path, "w", encoding="utf-8") as handle:
                handle.write(_report_page.render(result))
        except OSError as exc:
            print(f"cannot write {html_path}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        print(f"wrote {html_path}")
    return 0


def _keygen(*, ed25519: bool, public: str | None) -> int:
    """HMAC key (``kid:base64``), or a JWK Set: a new Ed25519 key, or FILE's public keys."""
    try:
        if public is not None:
            document = _keys.public_jwks(_keys.read_jwks(public))
        elif ed25519:
            document = _keys.new_ed25519_jwks(_signing.new_kid())
        else:
            print(f"{_signing.new_kid()}:{_signing.new_key()}")
            return 0
    except ConfigurationError as exc:
        print(f"keygen: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(document, indent=2))
    return 0


def _dashboards(out: str) -> int:
    from otel_identity import _dashboards as dashboards

    try:
        written = dashboards.write(out)
    except OSError as exc:
        print(f"otel-identity dashboards: cannot write to {out}: {exc.strerror or exc}")
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


def _command(name: str) -> Callable[..., Any]:
    """A command that lives outside the core (the demo), found through the
    ``otel_identity.commands`` entry points: the core imports no application of itself."""
    for entry_point in importlib.metadata.entry_points(group="otel_identity.commands", name=name):
        return entry_point.load()  # type: ignore[no-any-return]
    raise ImportError(f"no {name!r} command is installed with otel-identity: reinstall it")


def _demo(args: argparse.Namespace) -> int:
    try:
        run = _command("demo")
    except ImportError as exc:  # the demo's extra (grpcio, requests) is missing: it says which
        print(f"otel-identity demo: {exc}", file=sys.stderr)
        return 2
    return int(
        run(
            sys.stdout,
            export=args.export,
            broker=args.broker,
            prometheus=args.prometheus,
            linger=args.linger,
        )
    )


def _parser() -> tuple[argparse.ArgumentParser, Any]:
    """The command line, and its subcommands' parsers (each reports its own usage errors)."""
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
    demo.add_argument(
        "--prometheus", metavar="HOST:PORT", help="serve the metrics there for Prometheus"
    )
    demo.add_argument(
        "--linger",
        metavar="SECONDS",
        type=float,
        default=0.0,
        help="repeat the flow for this long (traffic for rate() to see)",
    )
    sub.add_parser("doctor", help="print the effective configuration and checks")
    keygen = sub.add_parser("keygen", help="print a new signing key (kid:base64key)")
    kind = keygen.add_mutually_exclusive_group()
    kind.add_argument(
        "--ed25519", action="store_true", help="a JWK Set with one new Ed25519 private key"
    )
    kind.add_argument(
        "--public", metavar="FILE", help="the public JWK Set of FILE (Ed25519 public keys only)"
    )
    report = sub.add_parser("report", help="identity coverage of exported traces")
    report.add_argument(
        "file",
        help="OTLP JSON or protobuf, Zipkin v2 JSON or ConsoleSpanExporter output "
        "(recognised from the content)",
    )
    report.add_argument("--html", metavar="PATH", help="also write the report as a page")
    dashboards = sub.add_parser(
        "dashboards", help="write the Prometheus rules and the Grafana dashboard"
    )
    dashboards.add_argument("--out", metavar="DIR", required=True, help="directory to write to")
    return parser, sub


def main(argv: Sequence[str] | None = None) -> int:
    parser, sub = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # the subcommand's own usage, not the top-level one
        sub.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "demo":
        if not 0 <= args.linger <= 3600:
            sub.choices["demo"].error("--linger wants 0 to 3600 seconds")
        return _demo(args)
    if args.command == "doctor":
        return _doctor()
    if args.command == "report":
        return _report(args.file, args.html)
    if args.command == "dashboards":
        return _dashboards(args.out)
    if args.command == "keygen":
        return _keygen(ed25519=args.ed25519, public=args.public)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
