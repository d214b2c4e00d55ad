"""The example, end to end: a real LocalCluster, two tenants, the resolver on the workers."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from distributed import Client, LocalCluster
from otel_identity_dask import DaskIdentityInstrumentor

HERE = Path(__file__).resolve().parent
NAME = "dask_tenant_jobs_app"


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ModuleType, Client]]:
    # Set before the cluster starts: worker processes read the same database.
    os.environ["EXAMPLE_DB"] = str(tmp_path_factory.mktemp("db") / "tenants.sqlite")
    sys.path.insert(0, str(HERE))  # worker processes start with the client's sys.path
    module = importlib.import_module(NAME)
    module.seed()
    try:
        with (
            LocalCluster(
                n_workers=2,
                threads_per_worker=2,
                host="127.0.0.1",
                dashboard_address=None,
                worker_dashboard_address=None,
            ) as cluster,
            Client(cluster) as client,
        ):
            yield module, client
    finally:
        sys.path.remove(str(HERE))
        os.environ.pop("EXAMPLE_DB", None)


@pytest.fixture(autouse=True)
def instrumented(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Only in the client's environment: the instrumentor hands it to the workers.
    monkeypatch.setenv("OTEL_IDENTITY_RESOLVER", f"{NAME}:load_user")
    DaskIdentityInstrumentor().instrument()
    yield
    DaskIdentityInstrumentor().uninstrument()


def test_each_tenant_gets_its_own_totals_with_its_user_resolved_on_the_worker(
    example: tuple[Any, Client],
) -> None:
    module, client = example
    alice, bob = module.tenant_report(client, "alice"), module.tenant_report(client, "bob")
    assert [r["total"] for r in alice["regions"]] == [100, 200, 300, 400]
    assert [r["total"] for r in bob["regions"]] == [7, 14, 21, 28]
    assert {r["by"] for r in alice["regions"]} == {"Alice"}
    assert {r["by"] for r in bob["regions"]} == {"Bob"}
    assert alice["summary"] == {"tenant": "acme", "total": 1000}
    assert bob["summary"] == {"tenant": "globex", "total": 70}


def test_a_task_without_identity_refuses_to_run(example: tuple[Any, Client]) -> None:
    module, client = example
    result = client.submit(module.region_total, "north", pure=False).result(60)
    assert result["error"] == "no tenant in identity; refusing to run"
