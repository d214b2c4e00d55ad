"""The demo flow: HTTP -> gRPC -> thread-pool fan-out -> queue consumer, all on loopback.

Ada (tenant acme) asks the ``web`` service for a report. ``web`` calls the ``reports`` HTTP
service, which calls the ``workflows`` gRPC service, which fans the work out on a plain
``ThreadPoolExecutor`` and queues one job per section for the ``worker``. Every hop rebuilds
``current_user`` from an SQLite users table, in its own thread. A ``legacy-cron`` producer that
drops identity shows what a lost hop looks like: ``identity.missing`` on its consumer span.

The application code below never passes identity around: the otel-identity instrumentors,
loaded as ``opentelemetry-instrument`` would load them, carry it.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import grpc
import requests
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from otel_identity_grpc import GrpcIdentityInstrumentor
from otel_identity_http import HttpClientIdentityInstrumentor, IdentityWSGIMiddleware
from otel_identity_threading import ThreadingIdentityInstrumentor

import otel_identity as oi
from otel_identity import instrumentation as oii
from otel_identity import names
from otel_identity_demo import _metrics
from otel_identity_demo._errors import DemoError
from otel_identity_demo._jobs import CeleryJobs, InProcessJobs, Jobs

USERS = [("u-1", "Ada", "acme"), ("u-2", "Grace", "globex")]
SECTIONS = ("sales", "stock", "churn")
BUILD = "/demo.Workflows/Build"
_RPC = {"rpc.system": "grpc", "rpc.service": "demo.Workflows", "rpc.method": "Build"}


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
        if row is None:
            return None
        return User(row[0], row[1], row[2], threading.current_thread().name)


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


def _reports_app(tracer: trace.Tracer, grpc_target: str) -> Any:
    """The ``reports`` HTTP service: a plain WSGI app that calls the gRPC service.

    ``IdentityWSGIMiddleware`` makes each request an http.server hop (OpenTelemetry's own
    WSGI middleware would sit beside it in a real deployment).
    """
    channel = grpc.insecure_channel(grpc_target)
    build = channel.unary_unary(BUILD)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with tracer.start_as_current_span("POST /reports", kind=SpanKind.SERVER):
            with tracer.start_as_current_span(BUILD, kind=SpanKind.CLIENT, attributes=_RPC):
                sections = json.loads(build(b"", timeout=10))
            body = json.dumps({"user": oi.current_user.name, "sections": sections})
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body.encode()]

    return IdentityWSGIMiddleware(app)


def _workflows_service(tracer: trace.Tracer, jobs: Jobs) -> grpc.GenericRpcHandler:
    """The ``workflows`` gRPC service: fans out on a thread pool, then queues the jobs."""

    def branch(section: str) -> str:
        with tracer.start_as_current_span(f"build {section}"):
            return f"{section} for {oi.current_user.name}"

    def build(request: bytes, context: grpc.ServicerContext) -> bytes:
        with tracer.start_as_current_span(BUILD, kind=SpanKind.SERVER, attributes=_RPC):
            with ThreadPoolExecutor(3, thread_name_prefix="branch") as pool:
                sections = list(pool.map(branch, SECTIONS))
            for section in SECTIONS:
                with tracer.start_as_current_span(f"publish {section}", kind=SpanKind.PRODUCER):
                    jobs.publish(section)
            return json.dumps(sections).encode()

    return grpc.method_handlers_generic_handler(
        "demo.Workflows", {"Build": grpc.unary_unary_rpc_method_handler(build)}
    )


@contextmanager
def _serve_http(app: Any) -> Iterator[int]:
    server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def _serve_grpc(handler: grpc.GenericRpcHandler) -> Iterator[str]:
    server = grpc.server(ThreadPoolExecutor(4, thread_name_prefix="grpc"))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None).wait(5)


def _pipeline(
    exporters: Sequence[Callable[[], SpanExporter]] = (),
) -> tuple[Callable[[str], trace.Tracer], InMemorySpanExporter]:
    """One exporter, a tracer provider per demo service (so spans say which service); each
    of ``exporters`` makes one more exporter per service (an exporter serves one provider)."""
    exporter = InMemorySpanExporter()

    def tracer_for(service: str) -> trace.Tracer:
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(oi.IdentitySpanProcessor())
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        for make in exporters:
            provider.add_span_processor(SimpleSpanProcessor(make()))
        return provider.get_tracer("otel_identity.demo")

    return tracer_for, exporter


@contextmanager
def _instrumented() -> Iterator[None]:
    instrumentors: list[BaseInstrumentor] = [
        ThreadingIdentityInstrumentor(),
        GrpcIdentityInstrumentor(),
        HttpClientIdentityInstrumentor(),
    ]
    for instrumentor in instrumentors:
        instrumentor.instrument()
    try:
        yield
    finally:
        for instrumentor in instrumentors:
            instrumentor.uninstrument()


@dataclass
class _Rounds:
    """What the flow did: the first round's reply and traces, and how many rounds ran."""

    reply: dict[str, Any]
    first_traces: set[int]
    count: int = 1


_JOBS_PER_ROUND = len(SECTIONS) + 1
_LINGER_PAUSE = 0.25  # seconds between rounds while lingering: a few hops a second


def _flow(tracer_for: Callable[[str], trace.Tracer], jobs: Jobs, linger: float) -> _Rounds:
    """One round of the flow, then more rounds for ``linger`` seconds (for rate() to see)."""
    with (
        _serve_grpc(_workflows_service(tracer_for("workflows"), jobs)) as target,
        _serve_http(_reports_app(tracer_for("reports"), target)) as port,
    ):
        web, cron = tracer_for("web"), tracer_for("legacy-cron")
        reply, traces = _round(web, cron, port, jobs)
        rounds = _Rounds(reply, traces)
        jobs.wait_for(_JOBS_PER_ROUND)
        deadline = time.monotonic() + linger
        while time.monotonic() < deadline:
            time.sleep(_LINGER_PAUSE)
            _round(web, cron, port, jobs)
            rounds.count += 1
            jobs.wait_for(rounds.count * _JOBS_PER_ROUND)
    return rounds


def _round(
    web: trace.Tracer, cron: trace.Tracer, port: int, jobs: Jobs
) -> tuple[dict[str, Any], set[int]]:
    """Ada's request, then the legacy cron job; the reply and the two traces' ids."""
    with (
        oi.use_identity(user_id="u-1", tenant_id="acme", roles=["analyst"]),
        web.start_as_current_span("Ada asks for a report") as asked,
        web.start_as_current_span("POST /reports", kind=SpanKind.CLIENT),
    ):
        reply: dict[str, Any] = requests.post(f"http://127.0.0.1:{port}/reports", timeout=10).json()
    # The broken hop: a legacy producer queues from an empty context (a cron job that
    # never had identity), so its job reaches the worker without one.
    token = otel_context.attach(otel_context.Context())
    try:
        with cron.start_as_current_span("publish cleanup") as published:
            jobs.publish("cleanup")
    finally:
        otel_context.detach(token)
    return reply, {asked.get_span_context().trace_id, published.get_span_context().trace_id}


def run(
    out: IO[str],
    export: str | None = None,
    broker: str | None = None,
    *,
    prometheus: str | None = None,
    linger: float = 0.0,
    exporters: Sequence[Callable[[], SpanExporter]] = (),
) -> int:
    """Run the demo flow and print its trace; 0 when every hop behaved as designed.

    ``export`` writes the spans as ConsoleSpanExporter JSON lines, for ``otel-identity report``;
    ``broker`` (``redis://...``) sends the queue hop through Celery instead of the in-process
    queue; ``prometheus`` (``HOST:PORT``) serves the otel-identity metrics there for a
    Prometheus to scrape; ``linger`` repeats the flow for that many seconds, so that ``rate()``
    has samples. The tree, the export and the check are of the first round. ``exporters``
    are span exporter factories (say, an OTLP exporter to your collector): each service of
    the demo exports through its own instance of each.

    What stops the demo from running (a bad ``OTEL_IDENTITY_*`` value, an ``export`` path
    that cannot be written, a broker that does not answer within seconds) is one line on
    stderr and exit status 2, checked before the flow starts.
    """
    try:
        with _metrics.serving(prometheus, out) as serving:
            if not serving:
                return 2
            return _run(out, export, broker, linger, exporters)
    except DemoError as exc:
        sys.stderr.write(f"otel-identity demo: {exc}\n")
        return 2


def _check_settings() -> None:
    try:
        oii.environment_settings()
    except oi.ConfigurationError as exc:
        raise DemoError(f"configuration error: {exc}") from None


def _check_export(export: str | None) -> None:
    if export is None:
        return
    try:
        with open(export, "w", encoding="utf-8"):
            pass
    except OSError as exc:
        raise DemoError(f"cannot write --export {export}: {exc.strerror or exc}") from None


def _run(
    out: IO[str],
    export: str | None,
    broker: str | None,
    linger: float,
    exporters: Sequence[Callable[[], SpanExporter]],
) -> int:
    _check_settings()
    _check_export(export)
    counted_before = oii.hop_counts()  # this run's hops only, whatever ran before
    tracer_for, exporter = _pipeline(exporters)
    done: list[str] = []
    worker_tracer = tracer_for("worker")
    jobs: Jobs = (
        CeleryJobs(broker, worker_tracer, done) if broker else InProcessJobs(worker_tracer, done)
    )
    with tempfile.TemporaryDirectory() as tmp, _instrumented():
        users = Users(f"{tmp}/users.db")
        oi.set_user_resolver(users.resolve)
        try:
            with jobs:
                rounds = _flow(tracer_for, jobs, linger)
        finally:
            oi.set_user_resolver(None)
    reply = rounds.reply
    finished = [
        s
        for s in exporter.get_finished_spans()
        if s.context is not None and s.context.trace_id in rounds.first_traces
    ]
    complete = len(done) == rounds.count * _JOBS_PER_ROUND
    done = done[:_JOBS_PER_ROUND]
    if export:
        try:
            with open(export, "w", encoding="utf-8") as handle:
                handle.writelines(span.to_json(indent=None) + "\n" for span in finished)
        except OSError as exc:
            raise DemoError(f"cannot write --export {export}: {exc.strerror or exc}") from None
    missing = [s for s in finished if any(e.name == names.EVENT_MISSING for e in s.events)]
    ok = reply.get("user") == "Ada" and len(missing) == 1 and complete
    out.write(render_tree(finished) + "\n\n")
    hops = {k: n - counted_before.get(k, 0) for k, n in oii.hop_counts().items()}
    out.write(_summary(reply, jobs.name, done, loads=users.loads, missing=len(missing), hops=hops))
    if rounds.count > 1:
        out.write(f"lingered: {rounds.count - 1} more round(s) of the same flow\n")
    out.write("demo: OK (every hop behaved as designed)\n" if ok else "demo: UNEXPECTED RESULT\n")
    if export:
        out.write(f"spans written to {export}: otel-identity report {export}\n")
    return 0 if ok else 1


def _summary(
    reply: dict[str, Any],
    worker: str,
    done: list[str],
    *,
    loads: int,
    missing: int,
    hops: dict[tuple[str, ...], int],
) -> str:
    """The run's figures, each said in words."""
    sections = ", ".join(reply.get("sections") or [])
    lines = [
        "Summary",
        f"  the reports service answered for: {reply.get('user')} (sections: {sections})",
        f"  the worker ({worker}) processed: " + "; ".join(sorted(done)),
        f"  users loaded from SQLite: {loads} ({_LOADS})",
        f"  spans with identity.missing: {missing} (expected: 1, the legacy-cron job's)",
        "  receiving hops, as the otel_identity.hops metric counted them, by kind:",
        *_hop_lines(hops),
    ]
    return "\n".join(lines) + "\n"


_LOADS = "once on each hop that read current_user, in that hop's own thread"
_OUTCOME_WORDS = {
    names.OUTCOME_PRESENT: "with identity",
    names.OUTCOME_MISSING: "without",
    names.OUTCOME_REJECTED: "rejected by policy",
    names.OUTCOME_ANONYMOUS: "on anonymous routes",
}
# Why a kind of hop arrives without identity in this demo (when it does).
_MISSING_WHY = {
    names.HOP_THREAD: "threads and pool tasks the servers and libraries start outside any "
    "request, for their own plumbing; threads are not a required hop, so this is expected "
    "and not flagged",
    names.HOP_QUEUE_CONSUME: "the legacy-cron job, the deliberately broken hop above",
}


def _hop_lines(hops: dict[tuple[str, ...], int]) -> list[str]:
    counts: dict[str, dict[str, int]] = {}
    for (hop, outcome), n in hops.items():
        if n:
            counts.setdefault(hop, {})[outcome] = n
    width = max((len(hop) for hop in counts), default=0)
    lines = []
    for hop, outcomes in sorted(counts.items()):
        said = ", ".join(
            f"{outcomes[o]} {words}" for o, words in _OUTCOME_WORDS.items() if outcomes.get(o)
        )
        if outcomes.get(names.OUTCOME_MISSING) and hop in _MISSING_WHY:
            said += f": {_MISSING_WHY[hop]}"
        indent = " " * (6 + width)
        lines.extend(
            textwrap.wrap(
                f"{hop:<{width}}  {said}",
                width=96,
                initial_indent="    ",
                subsequent_indent=indent,
            )
        )
    return lines


_KINDS = {
    SpanKind.SERVER: "server",
    SpanKind.CLIENT: "client",
    SpanKind.PRODUCER: "producer",
    SpanKind.CONSUMER: "consumer",
}


def render_tree(spans: Sequence[ReadableSpan]) -> str:
    """Spans as an indented tree with service, kind, identity columns and events."""
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
                _KINDS.get(span.kind, ""),
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
