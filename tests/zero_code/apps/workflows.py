"""The ``workflows`` gRPC service: no identity code at all. Each call fans out to a pool and
asks the service's own ``audit`` HTTP endpoint (Flask, same process) with ``requests``.

Run as ``opentelemetry-instrument python workflows.py PORT_FILE``.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import flask
import grpc
import requests
from werkzeug.serving import make_server

import otel_identity as oi

POOL = ThreadPoolExecutor(2, thread_name_prefix="wf-branch")
audit = flask.Flask("audit")
AUDIT = make_server("127.0.0.1", 0, audit, threaded=True)


def _who() -> dict[str, str | None]:
    user = oi.current_user
    here = threading.current_thread().name
    if not user:
        return {"thread": here, "user": None}
    return {"thread": here, **user.describe()}


@audit.get("/audit")
def audit_view() -> flask.Response:
    return flask.jsonify(_who())


def build(request: bytes, context: grpc.ServicerContext) -> bytes:
    branches = list(POOL.map(lambda _section: _who(), ["sales", "stock"]))
    audited = requests.get(f"http://127.0.0.1:{AUDIT.server_port}/audit", timeout=10).json()
    return json.dumps({"handler": _who(), "branches": branches, "audit": audited}).encode()


def main() -> None:
    server = grpc.server(ThreadPoolExecutor(4, thread_name_prefix="wf-rpc"))
    handler = grpc.method_handlers_generic_handler(
        "zc.Workflows", {"Build": grpc.unary_unary_rpc_method_handler(build)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    threading.Thread(target=AUDIT.serve_forever, daemon=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with open(sys.argv[1], "w", encoding="utf-8") as handle:
        handle.write(str(port))
    stop.wait()
    AUDIT.shutdown()
    server.stop(grace=None).wait(5)  # then atexit flushes the spans


if __name__ == "__main__":
    main()
