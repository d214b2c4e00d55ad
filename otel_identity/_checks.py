"""What ``otel-identity doctor`` checks beyond the settings' own validation.

    for finding in findings(_config.environment_settings()):
        print(finding.line())

A finding is an ``error`` (the setting cannot work: doctor exits 2), a ``warn`` (it works,
probably not as meant), or ``info``/``ok``. Nothing here changes any state; the instrumentation
packages are reached only through their ``opentelemetry_instrumentor`` entry points, as
``opentelemetry-instrument`` reaches them (the core imports none of them).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Literal

from otel_identity import _config

Level = Literal["error", "warn", "info", "ok"]
_LABELS = {"error": "ERROR", "warn": "WARN ", "info": "info ", "ok": "ok   "}


@dataclass(frozen=True)
class Finding:
    level: Level
    text: str

    def line(self) -> str:
        return f"  {_LABELS[self.level]} {self.text}"


def findings(settings: _config.Settings) -> list[Finding]:
    """Every check, in the order doctor prints them.

    Settings that name code (``module:function``) are imported from the current directory
    too, as ``python app.py`` run there would find them: the ``otel-identity`` script's own
    directory is not the application's.
    """
    added = os.getcwd() not in sys.path
    if added:
        sys.path.insert(0, os.getcwd())
    try:
        return [
            *_resolver(settings),
            *_allow_list(settings),
            *_instrumentor_checks(),
            *_span_instrumentations(),
            *_configurator(),
        ]
    finally:
        if added:
            sys.path.remove(os.getcwd())


def _resolver(settings: _config.Settings) -> Iterator[Finding]:
    spec = settings.resolver
    if spec is None or callable(spec):
        return
    try:
        target = _config.import_object(spec)
    except Exception as exc:  # noqa: BLE001 - an import may fail in any way; doctor reports it
        yield Finding(
            "error",
            f"OTEL_IDENTITY_RESOLVER={spec!r} cannot be imported ({type(exc).__name__}: {exc}); "
            "current_user would be None on every hop",
        )
        return
    if not callable(target):
        yield Finding("error", f"OTEL_IDENTITY_RESOLVER={spec!r} is not callable")
    else:
        yield Finding("ok", f"resolver {spec} imports")


# Single labels that are no public top-level domain (RFC 6761/6762, Kubernetes, common LANs).
_PRIVATE_LABELS = frozenset(
    {"svc", "internal", "local", "localhost", "lan", "home", "corp", "intranet", "private"}
    | {"test", "example", "invalid", "localdomain", "cluster"}
)
# Second-level labels under which country registries sell names (co.uk, com.au, ne.jp, ...).
_REGISTRY_LABELS = frozenset({"co", "com", "net", "org", "gov", "edu", "ac", "or", "ne", "go"})


def is_public_suffix(suffix: str) -> bool:
    """Whether ``*.suffix`` would match anyone's hosts: a top-level domain (``com``, ``de``)
    or a country registry's second level (``co.uk``, ``com.au``). A heuristic, not the
    Public Suffix List: it knows the shapes, not every registry."""
    labels = suffix.lower().strip(".").split(".")
    if len(labels) == 1:
        return labels[0] not in _PRIVATE_LABELS
    if len(labels) == 2:
        return len(labels[1]) == 2 and labels[0] in _REGISTRY_LABELS
    return False


def _allow_list(settings: _config.Settings) -> Iterator[Finding]:
    for entry in settings.egress_allow:
        if entry == "*":
            yield Finding(
                "warn",
                "egress_allow has '*', which matches no destination (entries are hosts, "
                "'*.suffix' patterns and CIDRs): the list replaces the default one, so "
                "identity is sent nowhere, loopback included",
            )
        elif entry.startswith("*.") and is_public_suffix(entry[2:]):
            yield Finding(
                "warn",
                f"egress_allow has {entry!r}: every host under a public suffix, so identity "
                "reaches third-party services; list your own domain ('*.example.com')",
            )


def _our_entry_points() -> list[metadata.EntryPoint]:
    return sorted(
        (
            ep
            for ep in metadata.entry_points(group="opentelemetry_instrumentor")
            if ep.value.startswith("otel_identity_")
        ),
        key=lambda ep: ep.name,
    )


def _instrumentor_checks() -> Iterator[Finding]:
    """What each instrumentation package checks of its own settings (``doctor()``)."""
    for ep in _our_entry_points():
        try:
            check: Callable[[], list[tuple[str, str]]] | None = getattr(ep.load(), "doctor", None)
        except Exception:  # noqa: BLE001, S112 - loading is reported by the instrumentor list
            continue
        if check is None:
            continue
        for level, text in check():
            yield Finding(level if level in _LABELS else "info", text)  # type: ignore[arg-type]


def _installed(distribution: str) -> bool:
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def _span_instrumentations() -> Iterator[Finding]:
    """Per boundary: a library is installed, OpenTelemetry's span instrumentation for it not."""
    seen: set[str] = set()
    for ep in _our_entry_points():
        package: Any
        try:
            package = importlib.import_module(ep.module.split(".")[0] + ".package")
        except Exception:  # noqa: BLE001, S112 - reported by the instrumentor list
            continue
        spans: dict[str, tuple[str, ...]] = getattr(package, "_spans", {})
        extra = getattr(package, "_extra", "")
        for library, instrumentations in sorted(spans.items()):
            if library in seen or not _installed(library):
                continue
            seen.add(library)
            if not instrumentations:
                yield Finding(
                    "info",
                    f"{library}: OpenTelemetry has no span instrumentation for it; identity is "
                    "carried, spans come from your own code",
                )
            elif not any(_installed(name) for name in instrumentations):
                yield Finding(
                    "warn",
                    f"{library} ({extra} boundary): {instrumentations[0]} is not installed, so "
                    f"no span of this boundary is exported (pip install 'otel-identity[{extra}]')",
                )


def _configurator() -> Iterator[Finding]:
    if not list(metadata.entry_points(group="opentelemetry_configurator")):
        yield Finding(
            "warn",
            "no OpenTelemetry configurator is installed (opentelemetry-distro or a vendor's "
            "distro): opentelemetry-instrument will set up no exporter",
        )
