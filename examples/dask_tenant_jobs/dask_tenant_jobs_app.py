"""Per-tenant aggregation on a Dask cluster that never runs against the wrong tenant.

Each signed-in user asks for their tenant's sales per region. The tasks take **no tenant
argument**: they read it from the identity the task carries, and ``current_user`` is loaded
from SQLite on the worker by the resolver, which the workers get from the client's
``OTEL_IDENTITY_RESOLVER`` alone. A task submitted without identity refuses to run.

    python dask_tenant_jobs_app.py       # seeds SQLite, starts a local cluster, prints totals
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from typing import Any

from dask import delayed
from distributed import Client, LocalCluster
from otel_identity_dask import DaskIdentityInstrumentor

import otel_identity as oi

DATABASE = os.environ.get("EXAMPLE_DB", "/tmp/dask_tenant_jobs.sqlite")
REGIONS = ("north", "south", "east", "west")
USERS = {"alice": ("Alice", "acme"), "bob": ("Bob", "globex")}


@dataclass(frozen=True)
class User:
    id: str
    name: str
    tenant_id: str


def load_user(identity: oi.Identity) -> User | None:
    """The resolver: runs on the worker, in the task's own hop, against the worker's SQLite."""
    with sqlite3.connect(DATABASE) as db:
        row = db.execute(
            "SELECT id, name, tenant_id FROM users WHERE id = ?", (identity.user_id,)
        ).fetchone()
    return User(*row) if row else None


def region_total(region: str) -> dict[str, Any]:
    """One task: the caller's tenant's sales in ``region``. Plain code, no tenant argument."""
    identity = oi.get_identity()
    user = oi.get_current_user()
    if identity is None or user is None or user.tenant_id != identity.tenant_id:
        # The bug this example exists for: without identity, refuse rather than guess.
        return {"region": region, "error": "no tenant in identity; refusing to run"}
    with sqlite3.connect(DATABASE) as db:
        (total,) = db.execute(
            "SELECT COALESCE(SUM(amount), 0) FROM sales WHERE tenant_id = ? AND region = ?",
            (user.tenant_id, region),
        ).fetchone()
    return {"region": region, "tenant": user.tenant_id, "by": user.name, "total": total}


def grand_total(parts: list[dict[str, Any]]) -> dict[str, Any]:
    identity = oi.get_identity()
    return {
        "tenant": identity.tenant_id if identity else None,
        "total": sum(p.get("total", 0) for p in parts),
    }


def seed() -> None:
    with sqlite3.connect(DATABASE) as db:
        db.executescript(
            "DROP TABLE IF EXISTS users; DROP TABLE IF EXISTS sales;"
            "CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT, tenant_id TEXT);"
            "CREATE TABLE sales (tenant_id TEXT, region TEXT, amount INTEGER);"
        )
        db.executemany("INSERT INTO users VALUES (?, ?, ?)", [(u, *v) for u, v in USERS.items()])
        rows = [
            (tenant, region, (i + 1) * (100 if tenant == "acme" else 7))
            for tenant in ("acme", "globex")
            for i, region in enumerate(REGIONS)
        ]
        db.executemany("INSERT INTO sales VALUES (?, ?, ?)", rows)


def tenant_report(client: Client, user_id: str) -> dict[str, Any]:
    """What a request handler does for a signed-in user: map over regions, then a delayed sum."""
    tenant = USERS[user_id][1]  # (authentication stands in: the user is who they say)
    with oi.use_identity(user_id=user_id, tenant_id=tenant):
        regions = client.gather(client.map(region_total, REGIONS))
        total = client.compute(delayed(grand_total)([delayed(region_total)(r) for r in REGIONS]))
        return {"regions": regions, "summary": total.result()}


def main() -> None:
    seed()
    # Configured once, in the client's environment: the workers get it from the client.
    os.environ.setdefault("OTEL_IDENTITY_RESOLVER", "dask_tenant_jobs_app:load_user")
    DaskIdentityInstrumentor().instrument()
    with (
        LocalCluster(n_workers=2, threads_per_worker=2, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        for user_id in USERS:
            report = tenant_report(client, user_id)
            print(user_id, report["summary"], [r["total"] for r in report["regions"]])
        print("no identity:", client.submit(region_total, "north", pure=False).result())


if __name__ == "__main__":
    main()
