"""The dashboard contract: attribute, event, metric and outcome names, as constants.

These names are stable; dashboards and alerts may be built on them.
"""

from __future__ import annotations

from typing import Final

# Span attributes (the identity keys are the configured baggage keys; these are defaults).
USER_ID: Final = "user.id"
USER_HASH: Final = "user.hash"
TENANT_ID: Final = "tenant.id"
SESSION_ID: Final = "session.id"
USER_ROLES: Final = "user.roles"
IDENTITY_VERIFIED: Final = "identity.verified"

# Span events and their attributes.
EVENT_MISSING: Final = "identity.missing"
EVENT_REJECTED: Final = "identity.rejected"
EVENT_RESOLVE_FAILED: Final = "identity.resolve_failed"
EVENT_STRIPPED: Final = "identity.stripped"
ATTR_HOP: Final = "identity.hop"
ATTR_MISSING_KEYS: Final = "identity.missing_keys"
ATTR_REJECT_REASON: Final = "identity.reject_reason"
ATTR_OUTCOME: Final = "identity.outcome"
ATTR_EXCEPTION_TYPE: Final = "exception.type"
ATTR_SERVER_ADDRESS: Final = "server.address"

# Metrics.
METRIC_HOPS: Final = "otel_identity.hops"
METRIC_RESOLVE_DURATION: Final = "otel_identity.resolve.duration"
METRIC_EGRESS_STRIPPED: Final = "otel_identity.egress.stripped"
METRIC_RESOLVE_FAILURES: Final = "otel_identity.resolve.failures"

# identity.outcome values.
OUTCOME_PRESENT: Final = "present"
OUTCOME_MISSING: Final = "missing"
OUTCOME_REJECTED: Final = "rejected"
OUTCOME_ANONYMOUS: Final = "anonymous"

# identity.reject_reason values.
REASON_BAD_SIGNATURE: Final = "bad_signature"
REASON_EXPIRED: Final = "expired"
REASON_UNKNOWN_KEY: Final = "unknown_key"
REASON_UNTRUSTED: Final = "untrusted"
REASON_MALFORMED: Final = "malformed"
REASON_OVERSIZE: Final = "oversize"

# identity.hop values.
HOP_HTTP_SERVER: Final = "http.server"
HOP_HTTP_CLIENT: Final = "http.client"
HOP_GRPC_SERVER: Final = "grpc.server"
HOP_GRPC_CLIENT: Final = "grpc.client"
HOP_THREAD: Final = "thread"
HOP_PROCESS: Final = "process"
HOP_QUEUE_PUBLISH: Final = "queue.publish"
HOP_QUEUE_CONSUME: Final = "queue.consume"
HOP_TASK: Final = "task"  # a distributed compute engine's task or actor call (Dask, Ray)
HOP_MANUAL: Final = "manual"
