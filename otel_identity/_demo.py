"""``otel-identity demo``: a real multi-hop flow on loopback, printed as a trace tree.

The flow: an edge request authenticated as a user of an SQLite users table goes over HTTP to
a "reports" service, fans out on a thread pool, and publishes jobs to a queue whose consumer
runs each job as the user who asked for it. One job is published by a legacy producer that
drops identity, and its consumer span shows ``identity.missing``. Every hop resolves
``current_user`` again from SQLite, in its own thread.
"""

from __future__ import annotations

import http.client
import json
import queue
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import otel_identity as oi
from otel_identity import _telemetry, names

USERS = [("u-1", "Ada", "acme"), ("u-2", "Grace", "globex")]


@dataclass(frozen=True)
class User:
    id: str
    name: str
    tenant: str
    loaded_in: str


class Users:
    """The demo's user store: a real SQLite file, one connection per thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.local = threading.local()
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT, tenant TEXT)")
            db.executemany("INSERT INTO users VALUES (?, ?, ?)", USERS)
        self.loads = 0

    def resolve(self, identity: oi.Identity) -> User | None:
        db = getattr(self.local, "db", None)
        if db is None:
            db = self.local.db = sqlite3.connect(self.path)
        self.loads += 1
        row = db.execute(
            "SELECT id, name, tenant FROM users WHERE id = ? AND tenant = ?",
            (identity.user_id, identity.tenant_id),
        ).fetchone()
        return (
            None if row is None else User(row[0], row[1], row[2], threading.current_thread().name)
        )


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


def _reports_service(tracer: trace.Tracer, jobs: queue.Queue[dict[str, str] | None]) -> Any:
    """The HTTP service: each request is an http.server hop, then a thread fan-out."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        headers = {
            key[5:].replace("_", "-").lower(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        with (
            oi.continue_from(headers, hop=names.HOP_HTTP_SERVER, route=environ["PATH_INFO"]),
            tracer.start_as_current_span("POST /reports", kind=SpanKind.SERVER),
        ):
            names_ = ["sales", "stock", "churn"]
            sections = _fan_out(tracer, names_)
            for section in names_:
                _publish(tracer, jobs, {"section": section})
            body = json.dumps({"user": oi.current_user.name, "sections": sections})
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body.encode()]

    return app


def _fan_out(tracer: trace.Tracer, sections: Sequence[str]) -> list[str]:
    captured = otel_context.get_current()  # captured at hand-off, never a worker's leftovers

    def branch(section: str) -> str:
        with (
            oi.continue_context(captured, hop=names.HOP_THREAD),
            tracer.start_as_current_span(f"build {section}"),
        ):
            return f"{section} for {oi.current_user.name}"

    with ThreadPoolExecutor(3, thread_name_prefix="branch") as pool:
        return list(pool.map(branch, sections))


def _publish(
    tracer: trace.Tracer, jobs: queue.Queue[dict[str, str] | None], job: dict[str, str]
) -> None:
    with tracer.start_as_current_span(f"publish {job['section']}", kind=SpanKind.PRODUCER):
        headers: dict[str, str] = {}
        oi.inject(headers, hop=names.HOP_QUEUE_PUBLISH)
        jobs.put({**job, **headers})


def _consume(
    tracer: trace.Tracer, jobs: queue.Queue[dict[str, str] | None], done: list[str]
) -> None:
    while (message := jobs.get(timeout=10)) is not None:
        with (
            oi.continue_from(message, hop=names.HOP_QUEUE_CONSUME),
            tracer.start_as_current_span(f"process {message['section']}", kind=SpanKind.CONSUMER),
        ):
            user = oi.current_user
            done.append(f"{message['section']}: {user.name if user else '<no user>'}")


@contextmanager
def _serve(app: Any) -> Iterator[int]:
    server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()


def _pipeline() -> tuple[Callable[[str], trace.Tracer], InMemorySpanExporter]:
    """One exporter, a tracer provider per demo service (so spans say which service)."""
    exporter = InMemorySpanExporter()

    def tracer_for(service: str) -> trace.Tracer:
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(oi.IdentitySpanProcessor())
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        return provider.get_tracer("otel_identity.demo")

    return tracer_for, exporter


def run(out: IO[str], export: str | None = None) -> int:
    """Run the demo flow and print its trace; 0 when every hop behaved as designed.

    ``export`` writes the spans as ConsoleSpanExporter JSON, for ``otel-identity report``.
    """
    tracer_for, exporter = _pipeline()
    tracer = tracer_for("web")
    with tempfile.TemporaryDirectory() as tmp:
        users = Users(f"{tmp}/users.db")
        oi.set_user_resolver(users.resolve)
        jobs: queue.Queue[dict[str, str] | None] = queue.Queue()
        done: list[str] = []
        consumer = threading.Thread(
            target=_consume, args=(tracer_for("worker"), jobs, done), name="consumer"
        )
        consumer.start()
        try:
            with _serve(_reports_service(tracer_for("reports"), jobs)) as port:
                with (
                    oi.use_identity(user_id="u-1", tenant_id="acme", roles=["analyst"]),
                    tracer.start_as_current_span("edge: Ada asks for a report"),
                    tracer.start_as_current_span("POST /reports", kind=SpanKind.CLIENT),
                ):
                    headers: dict[str, str] = {}
                    oi.inject(headers, destination=f"127.0.0.1:{port}", hop="http.client")
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    conn.request("POST", "/reports", headers=headers)
                    reply = json.loads(conn.getresponse().read())
                    conn.close()
                # The broken hop: a legacy producer injects with a bare propagator from an
                # empty context, so the job reaches the consumer without identity.
                with tracer_for("legacy-cron").start_as_current_span("publish cleanup"):
                    legacy: dict[str, str] = {"section": "cleanup"}
                    propagate.inject(
                        legacy,
                        context=trace.set_span_in_context(
                            trace.get_current_span(), otel_context.Context()
                        ),
                    )
                    jobs.put(legacy)
        finally:
            jobs.put(None)
            consumer.join(timeout=10)
        oi.set_user_resolver(None)
    finished = exporter.get_finished_spans()
    if export:
        with open(export, "w", encoding="utf-8") as handle:
            handle.writelines(span.to_json(indent=None) + "\n" for span in finished)
    out.write(render_tree(finished))
    out.write("\n")
    out.write(f"reports service replied: {reply}\n")
    out.write("consumer processed: " + "; ".join(done) + "\n")
    out.write(f"users loaded from SQLite: {users.loads} (once per hop, in the hop's thread)\n")
    counts = _telemetry.hop_counts()
    out.write(
        "otel_identity.hops: "
        + ", ".join(f"{hop}/{outcome}={n}" for (hop, outcome), n in sorted(counts.items()))
        + "\n"
    )
    missing = [s for s in finished if any(e.name == names.EVENT_MISSING for e in s.events)]
    ok = reply.get("user") == "Ada" and len(missing) == 1 and len(done) == 4
    out.write("demo: OK\n" if ok else "demo: UNEXPECTED RESULT\n")
    return 0 if ok else 1


def _hop_label(span: ReadableSpan) -> str:
    return {
        SpanKind.SERVER: "server",
        SpanKind.CLIENT: "client",
        SpanKind.PRODUCER: "producer",
        SpanKind.CONSUMER: "consumer",
    }.get(span.kind, "")


def render_tree(spans: Sequence[ReadableSpan]) -> str:
    """Spans as an indented tree with identity columns and events."""
    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        parent = span.parent.span_id if span.parent is not None else None
        children.setdefault(parent if parent in by_id else None, []).append(span)
    rows: list[tuple[str, ...]] = []

    def walk(span: ReadableSpan, depth: int) -> None:
        attrs = span.attributes or {}
        events = ", ".join(
            e.name + (f"({dict(e.attributes or {}).get(names.ATTR_HOP)})" if e.attributes else "")
            for e in span.events
        )
        rows.append(
            (
                "  " * depth + span.name,
                str(span.resource.attributes.get("service.name", "")),
                _hop_label(span),
                str(attrs.get(names.USER_ID, attrs.get(names.USER_HASH, "-"))),
                str(attrs.get(names.TENANT_ID, "-")),
                events,
            )
        )
        for child in children.get(span.context.span_id if span.context else None, []):
            walk(child, depth + 1)

    for root in children.get(None, []):
        walk(root, 0)
    header = ("span", "service", "kind", "user.id", "tenant.id", "events")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = [
        "  ".join(
            cell.ljust(widths[i]) if i < len(widths) else cell for i, cell in enumerate(row)
        ).rstrip()
        for row in [header, *rows]
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
