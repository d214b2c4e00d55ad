"""Per-tenant Celery work that never runs against the wrong tenant.

A Flask view enqueues a report for the signed-in user's tenant *without passing the tenant*:
the task reads it from the identity the message carries, loads the tenant's rows through a
fresh SQLAlchemy session, and resolves ``current_user`` itself. A task enqueued without
identity refuses to run instead of querying ``tenant_id IS NULL`` or the previous tenant.

    celery -A celery_tenant_tasks_app:celery worker -P threads -c 4     # the worker
    flask --app celery_tenant_tasks_app run                      # the web app
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from flask import Flask, abort, jsonify, request
from otel_identity_celery import CeleryIdentityInstrumentor
from sqlalchemy import ForeignKey, create_engine, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import otel_identity as oi

BROKER = os.environ.get("EXAMPLE_BROKER", "redis://127.0.0.1:6379/13")
DATABASE = os.environ.get("EXAMPLE_DB", "/tmp/celery_tenant_tasks.sqlite")
QUEUE = os.environ.get("EXAMPLE_QUEUE", "celery-tenant-tasks")


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(primary_key=True)
    name: Mapped[str]
    tenant_id: Mapped[str]


class Invoice(Base):
    __tablename__ = "invoices"
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[str]
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    amount: Mapped[int]


engine = create_engine(f"sqlite:///{DATABASE}")

celery = Celery("celery_tenant_tasks", broker=BROKER, backend=BROKER)
celery.conf.update(
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

# Publisher and worker import this module, so both sides are instrumented.
CeleryIdentityInstrumentor().instrument()


@oi.user_resolver
def load_user(identity: oi.Identity) -> User | None:
    # A fresh session per hop: the task gets its own User object, never the web request's.
    with Session(engine, expire_on_commit=False) as session:
        return session.get(User, identity.user_id)


@celery.task(name="reports.tenant_summary")
def tenant_summary() -> dict[str, Any]:
    identity = oi.get_identity()
    if identity is None or identity.tenant_id is None:
        # The bug this example exists for: without identity, refuse rather than guess.
        return {"error": "no tenant in identity; refusing to run"}
    with Session(engine) as session:
        count, total = session.execute(
            select(func.count(Invoice.id), func.coalesce(func.sum(Invoice.amount), 0)).where(
                Invoice.tenant_id == identity.tenant_id
            )
        ).one()
    user = oi.get_current_user()
    return {
        "tenant": identity.tenant_id,
        "requested_by": user.name if user is not None else None,
        "invoices": count,
        "total": total,
    }


app = Flask(__name__)


@app.before_request
def authenticate() -> None:
    # Stand-in for real authentication (a session cookie, a JWT, Flask-Login): it decides who
    # is asking; otel-identity only carries that on.
    user_id = request.headers.get("X-User")
    if not user_id:
        return
    with Session(engine) as session:
        user = session.get(User, user_id)
    if user is None:
        abort(401)
    request.environ["identity"] = oi.use_identity(user_id=user.id, tenant_id=user.tenant_id)
    request.environ["identity"].__enter__()


@app.teardown_request
def forget(_exc: BaseException | None) -> None:
    scope = request.environ.pop("identity", None)
    if scope is not None:
        scope.__exit__(None, None, None)


@app.post("/reports")
def enqueue_report() -> Any:
    if oi.get_identity() is None:
        abort(401)
    result = tenant_summary.delay()  # no tenant argument: it travels with the message
    return jsonify({"task_id": result.id}), 202


@app.get("/reports/<task_id>")
def report(task_id: str) -> Any:
    result = celery.AsyncResult(task_id)
    if not result.ready():
        return jsonify({"state": result.state}), 202
    return jsonify(result.get(timeout=1))


def create_schema(seed: bool = True) -> None:
    Base.metadata.create_all(engine)
    if not seed:
        return
    with Session(engine) as session, session.begin():
        if session.get(User, "alice") is not None:
            return
        session.add_all(
            [
                User(id="alice", name="Alice", tenant_id="acme"),
                User(id="bob", name="Bob", tenant_id="globex"),
                *(Invoice(tenant_id="acme", owner_id="alice", amount=a) for a in (100, 250, 50)),
                *(Invoice(tenant_id="globex", owner_id="bob", amount=a) for a in (999, 1)),
            ]
        )


if __name__ == "__main__":
    create_schema()
    print(f"schema ready in {DATABASE}")
