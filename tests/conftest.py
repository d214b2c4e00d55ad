"""Shared fixtures: one SDK pipeline for the whole run, clean settings per test, loud errors.

Like sentry-python's test suite, the library's own swallowed errors (``log_internal_error``)
are quiet in production and a test failure here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_identity as oi
from otel_identity import _config, _resolver, _telemetry

EXPORTER = InMemorySpanExporter()
METRIC_READER = InMemoryMetricReader()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(oi.IdentitySpanProcessor())
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))
trace.set_tracer_provider(PROVIDER)
metrics.set_meter_provider(MeterProvider(metric_readers=[METRIC_READER]))


class _InternalErrors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "internal error" in record.getMessage():
            self.records.append(record)


_INTERNAL = _InternalErrors()
logging.getLogger("otel_identity").addHandler(_INTERNAL)


@pytest.fixture(autouse=True)
def _clean_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(__import__("os").environ):
        if name.startswith("OTEL_IDENTITY_"):
            monkeypatch.delenv(name)
    _config.reset_settings()
    _resolver.reset_resolver()
    _telemetry.reset_log_limits()  # each test sees its own first log line
    EXPORTER.clear()
    _INTERNAL.records.clear()
    yield
    _config.reset_settings()
    _resolver.reset_resolver()
    errors = list(_INTERNAL.records)
    _INTERNAL.records.clear()
    assert not errors, (
        f"otel-identity swallowed internal errors: {[r.getMessage() for r in errors]}"
    )


@pytest.fixture
def spans() -> InMemorySpanExporter:
    """The in-memory exporter of the global SDK pipeline (cleared before each test)."""
    return EXPORTER


@pytest.fixture
def metric_reader() -> InMemoryMetricReader:
    return METRIC_READER


@pytest.fixture
def tracer() -> trace.Tracer:
    return PROVIDER.get_tracer("tests")
