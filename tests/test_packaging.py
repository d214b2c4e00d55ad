"""The install resolves to current OpenTelemetry releases and registers the entry points."""

from __future__ import annotations

import importlib
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import otel_identity as oi


@pytest.mark.parametrize("dist", ["opentelemetry-api", "opentelemetry-sdk"])
def test_api_and_sdk_are_current_1_4x(dist: str) -> None:
    assert Version(metadata.version(dist)) >= Version("1.45")


@pytest.mark.parametrize(
    "dist", ["opentelemetry-instrumentation", "opentelemetry-instrumentation-threading"]
)
def test_contrib_packages_are_current_0_6xb(dist: str) -> None:
    version = Version(metadata.version(dist))
    assert version >= Version("0.66b0"), f"{dist} resolved to an old release: {version}"


def test_contrib_pins_match_the_installed_instrumentation() -> None:
    installed = metadata.version("opentelemetry-instrumentation")
    requires = metadata.requires("opentelemetry-instrumentation-threading") or []
    assert f"opentelemetry-instrumentation=={installed}" in [r.replace(" ", "") for r in requires]


def test_core_instrumentor_is_registered_for_auto_instrumentation() -> None:
    eps = {ep.name: ep for ep in metadata.entry_points(group="opentelemetry_instrumentor")}
    assert eps["otel_identity"].load() is oi.IdentityInstrumentor


def test_every_registered_instrumentor_loads_and_is_a_base_instrumentor() -> None:
    from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

    ours = [
        ep
        for ep in metadata.entry_points(group="opentelemetry_instrumentor")
        if ep.value.startswith("otel_identity")
    ]
    assert ours
    for ep in ours:
        assert issubclass(ep.load(), BaseInstrumentor), ep.name


def test_package_is_typed() -> None:
    from importlib.resources import files

    assert files("otel_identity").joinpath("py.typed").is_file()


def test_public_api_matches_the_design_contract() -> None:
    for name in [
        "Identity",
        "set_identity",
        "get_identity",
        "clear_identity",
        "use_identity",
        "require_identity",
        "set_user_resolver",
        "user_resolver",
        "current_user",
        "get_current_user",
        "inject",
        "extract",
        "continue_from",
        "IdentitySpanProcessor",
        "MissingIdentityError",
        "IdentityRejectedError",
        "configure",
    ]:
        assert name in oi.__all__ and hasattr(oi, name), name


def _extras() -> dict[str, list[Requirement]]:
    """otel-identity's extras, as installed (its own metadata), extra name -> requirements."""
    extras: dict[str, list[Requirement]] = {}
    for line in metadata.requires("otel-identity") or []:
        requirement = Requirement(line)
        marker = str(requirement.marker or "")
        if "extra ==" in marker:
            name = marker.split("extra ==", 1)[1].strip().strip("'\"")
            extras.setdefault(name, []).append(requirement)
    return extras


BOUNDARIES = [
    "grpc",
    "flask",
    "http",
    "celery",
    "kafka",
    "amqp",
    "nats",
    "threading",
    "dask",
    "ray",
]


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_each_extra_brings_the_span_instrumentation_of_its_boundary(boundary: str) -> None:
    """What doctor asks for (``package._spans``) is what the extra installs."""
    package = importlib.import_module(f"otel_identity_{boundary}.package")
    brought = {r.name for r in _extras().get(package._extra, [])}
    for library, instrumentations in package._spans.items():
        if instrumentations:
            assert instrumentations[0] in brought, (boundary, library, sorted(brought))


def test_every_contrib_requirement_of_every_extra_has_a_current_lower_bound() -> None:
    """An unbounded contrib add-on can resolve to a release from years ago (pika 0.44b0)."""
    found = 0
    for extra, requirements in _extras().items():
        for requirement in requirements:
            if not requirement.name.startswith("opentelemetry-"):
                continue
            found += 1
            assert requirement.specifier, (extra, str(requirement))
            assert not requirement.specifier.contains("0.65b0", prereleases=True), (
                extra,
                str(requirement),
            )
    assert found >= 15


def test_installed_span_instrumentations_resolved_to_current_releases() -> None:
    checked = []
    for requirements in _extras().values():
        for requirement in requirements:
            if not requirement.name.startswith("opentelemetry-instrumentation-"):
                continue
            try:
                version = Version(metadata.version(requirement.name))
            except metadata.PackageNotFoundError:
                continue
            assert version >= Version("0.66b0"), f"{requirement.name} resolved to {version}"
            checked.append(requirement.name)
    assert "opentelemetry-instrumentation-grpc" in checked
    assert "opentelemetry-instrumentation-pika" in checked
