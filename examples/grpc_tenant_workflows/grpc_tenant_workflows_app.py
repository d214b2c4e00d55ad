"""A workflow engine that loses the tenant between services, and the same one with otel-identity.

    python examples/grpc_tenant_workflows/grpc_tenant_workflows_app.py

The flow, all on loopback: an HTTP trigger (WSGI, on wsgiref) authenticates the caller and
asks the gRPC workflow service to start a workflow; the service's runtime opens a brand-new
SQLAlchemy session for the message (a new "service scope") and loads the tenant's workflow
definition. Like an ORM global query filter, the session scopes every query to the tenant of
the current identity. Without otel-identity the tenant is gone on the gRPC side, the query
runs ``WHERE tenant_id IS NULL``, and the answer is "workflow definition not found".
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import grpc
from otel_identity_grpc import GrpcIdentityInstrumentor
from sqlalchemy import Engine, String, create_engine, event, select
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    ORMExecuteState,
    Session,
    mapped_column,
    sessionmaker,
    with_loader_criteria,
)
from sqlalchemy.pool import StaticPool

import otel_identity as oi

START = "/workflows.Engine/Start"
NOT_FOUND = "workflow definition not found"
NO_TENANT = "no tenant: query refused"

# The trigger's own authentication: bearer token -> (user, tenant).
TOKENS = {"token-alice": ("alice", "acme"), "token-bob": ("bob", "globex")}


class Base(DeclarativeBase):
    pass


class WorkflowDefinition(Base):
    __tablename__ = "workflow_definitions"

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[str | None] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(64))
    steps: Mapped[str] = mapped_column(String(256))


def make_database() -> Engine:
    """An in-memory SQLite database shared by all threads, with two tenants' definitions."""
    engine = create_engine(
        "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
    )
    Base.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        session.add_all(
            [
                WorkflowDefinition(
                    tenant_id="acme", name="onboarding", steps="kyc,contract,welcome"
                ),
                WorkflowDefinition(tenant_id="acme", name="billing", steps="invoice,collect"),
                WorkflowDefinition(tenant_id="globex", name="onboarding", steps="sso,welcome"),
            ]
        )
    return engine


def tenant_sessions(engine: Engine, *, fail_closed: bool = False) -> sessionmaker[Session]:
    """Sessions whose every SELECT is scoped to the current identity's tenant.

    This is the ORM "global query filter" of the incident: it reads the tenant from ambient
    state when the query runs. With the tenant lost, ``tenant_id == None`` renders as
    ``tenant_id IS NULL`` and matches nothing. ``fail_closed=True`` refuses to run such a
    query at all (``oi.MissingIdentityError``): a loud error instead of a silent wrong answer.
    """
    factory = sessionmaker(engine)

    @event.listens_for(factory, "do_orm_execute")
    def _scope_to_tenant(state: ORMExecuteState) -> None:
        if state.is_select:
            identity = oi.require_identity() if fail_closed else oi.get_identity()
            tenant = identity.tenant_id if identity else None
            if fail_closed and tenant is None:
                raise oi.MissingIdentityError("no tenant in the current identity")
            state.statement = state.statement.options(
                with_loader_criteria(
                    WorkflowDefinition,
                    WorkflowDefinition.tenant_id == tenant,
                    include_aliases=True,
                )
            )

    return factory


class WorkflowNotFoundError(LookupError):
    pass


def run_message(sessions: sessionmaker[Session], message: dict[str, Any]) -> dict[str, Any]:
    """The runtime's work for one message: a new session (scope), then the definition."""
    with sessions() as session:
        definition = session.scalars(
            select(WorkflowDefinition).where(WorkflowDefinition.name == message["workflow"])
        ).first()
        if definition is None:
            raise WorkflowNotFoundError(NOT_FOUND)
        return {"workflow": definition.name, "steps": definition.steps.split(",")}


def workflow_service(sessions: sessionmaker[Session]) -> grpc.GenericRpcHandler:
    """``/workflows.Engine/Start``: each request is one message for the runtime."""

    def start(request: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            return json.dumps(run_message(sessions, json.loads(request))).encode()
        except WorkflowNotFoundError:
            context.abort(grpc.StatusCode.NOT_FOUND, NOT_FOUND)
            raise  # abort() raises; this line only tells readers (and type checkers) so
        except oi.MissingIdentityError:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, NO_TENANT)
            raise

    return grpc.method_handlers_generic_handler(
        "workflows.Engine", {"Start": grpc.unary_unary_rpc_method_handler(start)}
    )


def trigger_app(channel: grpc.Channel) -> Callable[..., Iterable[bytes]]:
    """The HTTP trigger: ``POST /workflows/<name>`` with ``Authorization: Bearer <token>``."""
    start = channel.unary_unary(START)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        def reply(status: str, body: dict[str, Any]) -> list[bytes]:
            start_response(status, [("Content-Type", "application/json")])
            return [json.dumps(body).encode()]

        token = environ.get("HTTP_AUTHORIZATION", "").removeprefix("Bearer ")
        if token not in TOKENS:
            return reply("401 Unauthorized", {"error": "unknown token"})
        user, tenant = TOKENS[token]
        name = environ.get("PATH_INFO", "").rsplit("/", 1)[-1]
        # The edge knows who is asking; from here on the identity has to travel by itself.
        with oi.use_identity(user_id=user, tenant_id=tenant):
            try:
                answer = start(json.dumps({"workflow": name}).encode(), timeout=10)
            except grpc.RpcError as error:
                if error.code() is grpc.StatusCode.NOT_FOUND:
                    return reply("404 Not Found", {"error": error.details()})
                if error.code() is grpc.StatusCode.PERMISSION_DENIED:
                    return reply("403 Forbidden", {"error": error.details()})
                raise
        return reply("200 OK", json.loads(answer))

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def running(engine: Engine, *, identity: bool, fail_closed: bool = False) -> Iterator[str]:
    """Trigger + workflow service on loopback; yields the trigger's base URL.

    ``identity=True`` installs otel-identity's gRPC instrumentation for servers and channels
    created inside; ``False`` is the engine as it was when the incident happened.
    """
    instrumentor = GrpcIdentityInstrumentor()
    if identity:
        instrumentor.instrument()
    pool = futures.ThreadPoolExecutor(max_workers=4)
    try:
        server = grpc.server(
            pool, handlers=[workflow_service(tenant_sessions(engine, fail_closed=fail_closed))]
        )
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        http: WSGIServer = make_server(
            "127.0.0.1", 0, trigger_app(channel), handler_class=_QuietHandler
        )
        thread = threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        try:
            yield f"http://127.0.0.1:{http.server_port}"
        finally:
            http.shutdown()
            thread.join(5)
            http.server_close()
            channel.close()
            server.stop(None).wait(5)
    finally:
        pool.shutdown(wait=False)
        if identity:
            instrumentor.uninstrument()


def post(base_url: str, path: str, token: str) -> tuple[int, dict[str, Any]]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        base_url + path, data=b"", headers={"Authorization": f"Bearer {token}"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def sql_log(engine: Engine) -> list[tuple[str, Any]]:
    """Every statement the engine sends to the database, with its parameters."""
    log: list[tuple[str, Any]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        log.append((" ".join(statement.split()), parameters))

    return log


def main() -> None:
    for identity, fail_closed in ((False, False), (False, True), (True, True)):
        engine = make_database()
        log = sql_log(engine)
        mode = "on" if identity else "off"
        print(f"\n== otel-identity {mode}, fail_closed={fail_closed} ==")
        with running(engine, identity=identity, fail_closed=fail_closed) as url:
            for token in ("token-alice", "token-bob"):
                print(
                    f"POST /workflows/onboarding as {TOKENS[token]}:",
                    post(url, "/workflows/onboarding", token),
                )
        for statement, parameters in log:
            print("   SQL:", statement.split(" FROM ")[-1], parameters)


if __name__ == "__main__":
    main()
