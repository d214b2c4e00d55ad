"""The install resolves to current OpenTelemetry releases and registers the entry points."""

from __future__ import annotations

from importlib import metadata

import pytest
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
