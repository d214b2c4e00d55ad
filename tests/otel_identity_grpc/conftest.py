"""gRPC instrumentation tests: every test leaves grpc's module functions as it found them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from otel_identity_grpc import GrpcIdentityInstrumentor, _state, _wire

from .otel_identity_grpc_echo import ORIGINALS, otel_grpc


@pytest.fixture(autouse=True)
def _pristine_grpc() -> Iterator[None]:
    yield
    for instrumentor in (
        GrpcIdentityInstrumentor(),
        otel_grpc.GrpcInstrumentorServer(),
        otel_grpc.GrpcInstrumentorClient(),
        otel_grpc.GrpcAioInstrumentorServer(),
        otel_grpc.GrpcAioInstrumentorClient(),
    ):
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
    for (module, name), function in ORIGINALS.items():
        setattr(module, name, function)
    _state.active = False
    _wire.uninstall()
