"""Log correlation: who and which trace, on every log record.

    handler.addFilter(oi.IdentityLogFilter())
    logging.basicConfig(format="%(user_id)s %(tenant_id)s %(trace_id)s %(message)s")

    structlog.configure(processors=[oi.structlog_processor, ...])

Fields: ``user_id`` (in privacy mode ``hash`` it stays ``None`` and ``user_hash`` carries the
hash; mode ``none`` sets neither), ``tenant_id``, and ``trace_id``/``span_id`` as 32/16 hex digits
when a span is active. Every field is on every log record, ``None`` when it has no value, so a
format string naming any of them never fails whatever the privacy mode; structlog gets only the
fields that have a value.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from opentelemetry import trace

from otel_identity import _config
from otel_identity._attributes import hash_user
from otel_identity._context import get_identity


def _fields() -> dict[str, str | None]:
    identity = get_identity()
    mode = _config.get_settings().span_attributes
    fields: dict[str, str | None] = {"user_id": None, "user_hash": None, "tenant_id": None}
    if identity is not None and mode != "none":
        if identity.user_id is not None:
            if mode == "hash":
                fields["user_hash"] = hash_user(identity.user_id)
            else:
                fields["user_id"] = identity.user_id
        fields["tenant_id"] = identity.tenant_id
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        fields["trace_id"] = format(span_context.trace_id, "032x")
        fields["span_id"] = format(span_context.span_id, "016x")
    else:
        fields["trace_id"] = fields["span_id"] = None
    return fields


class IdentityLogFilter(logging.Filter):
    """Adds identity and trace fields to each record; never filters anything out."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            for key, value in _fields().items():
                if not hasattr(record, key) or getattr(record, key) is None:
                    setattr(record, key, value)
        except Exception:  # noqa: BLE001, S110 - logging about logging would recurse
            pass
        return True


def structlog_processor(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor adding the same fields (only those that have a value)."""
    try:
        for key, value in _fields().items():
            if value is not None:
                event_dict.setdefault(key, value)
    except Exception:  # noqa: BLE001, S110 - a log call must never fail because of us
        pass
    return event_dict
