"""The ``workflows`` gRPC service: no identity code at all; it fans each call out to a pool.

Run as ``opentelemetry-instrument python workflows.py PORT_FILE``.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc

import otel_identity as oi

POOL = ThreadPoolExecutor(2, thread_name_prefix="wf-branch")


def _who() -> dict[str, str | None]:
    user = oi.current_user
    here = threading.current_thread().name
    if not user:
        return {"thread": here, "user": None}
    return {"thread": here, **user.describe()}


def build(request: bytes, context: grpc.ServicerContext) -> bytes:
    branches = list(POOL.map(lambda _section: _who(), ["sales", "stock"]))
    return json.dumps({"handler": _who(), "branches": branches}).encode()


def main() -> None:
    server = grpc.server(ThreadPoolExecutor(4, thread_name_prefix="wf-rpc"))
    handler = grpc.method_handlers_generic_handler(
        "zc.Workflows", {"Build": grpc.unary_unary_rpc_method_handler(build)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with open(sys.argv[1], "w", encoding="utf-8") as handle:
        handle.write(str(port))
    stop.wait()
    server.stop(grace=None).wait(5)  # then atexit flushes the spans


if __name__ == "__main__":
    main()
