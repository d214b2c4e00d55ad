"""Log correlation: logging.Filter and structlog processor."""

from __future__ import annotations

import logging

import pytest
import structlog
from opentelemetry import trace

import otel_identity as oi


def make_logger(stream: list[str]) -> logging.Logger:
    class ListHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            stream.append(self.format(record))

    handler = ListHandler()
    handler.addFilter(oi.IdentityLogFilter())
    handler.setFormatter(logging.Formatter("%(user_id)s|%(tenant_id)s|%(trace_id)s|%(message)s"))
    logger = logging.getLogger("tests.log_correlation")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def test_log_records_carry_identity_and_trace_ids(tracer: trace.Tracer) -> None:
    lines: list[str] = []
    logger = make_logger(lines)
    logger.info("outside")
    with oi.use_identity(user_id="u1", tenant_id="t1"), tracer.start_as_current_span("s") as span:
        logger.info("inside")
        trace_id = format(span.get_span_context().trace_id, "032x")
    assert lines == ["None|None|None|outside", f"u1|t1|{trace_id}|inside"]


def test_log_filter_hashes_user_in_privacy_mode() -> None:
    oi.configure(span_attributes="hash")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    with oi.use_identity(user_id="alice"):
        assert oi.IdentityLogFilter().filter(record)
    assert not getattr(record, "user_id", None)
    assert len(record.user_hash) == 64  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", ["id", "hash", "none"])
def test_every_privacy_mode_keeps_the_documented_format_working(mode: str) -> None:
    # The format names user_id: a mode that dropped the field lost the whole record.
    oi.configure(span_attributes=mode)
    lines: list[str] = []
    logger = make_logger(lines)
    with oi.use_identity(user_id="alice", tenant_id="acme"):
        logger.info("kept")
    shown_user = {"id": "alice", "hash": "None", "none": "None"}[mode]
    shown_tenant = "None" if mode == "none" else "acme"
    assert lines == [f"{shown_user}|{shown_tenant}|None|kept"]
    assert "alice" not in lines[0] or mode == "id"


def test_structlog_processor_adds_present_fields_only(tracer: trace.Tracer) -> None:
    assert oi.structlog_processor(None, "info", {"event": "e"}) == {"event": "e"}
    with oi.use_identity(user_id="u1"), tracer.start_as_current_span("s"):
        out = oi.structlog_processor(None, "info", {"event": "e", "user_id": "explicit"})
    assert out["user_id"] == "explicit"
    assert "tenant_id" not in out and len(out["trace_id"]) == 32


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_structlog_pipeline_end_to_end() -> None:
    captured: list[dict[str, object]] = []

    def capture(logger: object, method: str, event_dict: dict[str, object]) -> str:
        captured.append(dict(event_dict))
        return "ok"

    structlog.configure(processors=[oi.structlog_processor, capture])
    try:
        with oi.use_identity(user_id="u2", tenant_id="t2"):
            structlog.get_logger().info("hello")
    finally:
        structlog.reset_defaults()
    assert captured[0]["user_id"] == "u2" and captured[0]["tenant_id"] == "t2"
