"""The example's claim, proved from the SQL log: with otel-identity no query runs without the
tenant; without it, the tenant is lost at the gRPC hop and the query asks for ``IS NULL``."""

from __future__ import annotations

import re
from typing import Any

from grpc_tenant_workflows_app import (
    NO_TENANT,
    NOT_FOUND,
    make_database,
    post,
    running,
    sql_log,
)

TENANT_FILTER = "workflow_definitions.tenant_id = ?"


def _selects(log: list[tuple[str, Any]]) -> list[tuple[str, tuple[Any, ...]]]:
    return [(s, tuple(p)) for s, p in log if re.match(r"SELECT\b", s)]


def test_with_otel_identity_every_query_is_filtered_by_the_callers_tenant() -> None:
    engine = make_database()
    log = sql_log(engine)
    with running(engine, identity=True) as url:
        alice = post(url, "/workflows/onboarding", "token-alice")
        bob = post(url, "/workflows/onboarding", "token-bob")
        bob_billing = post(url, "/workflows/billing", "token-bob")  # acme has it, globex not
    assert alice == (200, {"workflow": "onboarding", "steps": ["kyc", "contract", "welcome"]})
    assert bob == (200, {"workflow": "onboarding", "steps": ["sso", "welcome"]})
    assert bob_billing == (404, {"error": NOT_FOUND})
    selects = _selects(log)
    assert len(selects) == 3
    for statement, parameters in selects:
        assert TENANT_FILTER in statement
        assert "IS NULL" not in statement
        assert None not in parameters
    assert [p[-1] for _, p in selects] == ["acme", "globex", "globex"]


def test_without_otel_identity_the_tenant_is_lost_and_the_query_asks_for_null() -> None:
    # The incident, reproduced: the edge knew the tenant, the new session per message did not.
    engine = make_database()
    log = sql_log(engine)
    with running(engine, identity=False) as url:
        alice = post(url, "/workflows/onboarding", "token-alice")
    assert alice == (404, {"error": NOT_FOUND})
    ((statement, parameters),) = _selects(log)
    assert "workflow_definitions.tenant_id IS NULL" in statement
    assert "acme" not in parameters


def test_fail_closed_sessions_refuse_to_query_without_a_tenant() -> None:
    engine = make_database()
    log = sql_log(engine)
    with running(engine, identity=False, fail_closed=True) as url:
        assert post(url, "/workflows/onboarding", "token-alice") == (403, {"error": NO_TENANT})
    assert _selects(log) == []
    with running(engine, identity=True, fail_closed=True) as url:
        assert post(url, "/workflows/onboarding", "token-alice")[0] == 200
    assert len(_selects(log)) == 1
