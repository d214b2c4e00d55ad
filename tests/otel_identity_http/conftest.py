"""Real servers on loopback for the HTTP tests: threaded wsgiref and uvicorn, stopped after use."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class Server:
    def __init__(self, host: str, port: int, stop: Callable[[], None]) -> None:
        self.host = host
        self.port = port
        self.stop = stop

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"


@pytest.fixture
def wsgi_server() -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(app: Any, host: str = "127.0.0.1") -> Server:
        httpd = make_server(
            host, 0, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
        )
        thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()

        def stop() -> None:
            httpd.shutdown()
            httpd.server_close()
            thread.join(5)

        server = Server(host, httpd.server_address[1], stop)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def asgi_server() -> Iterator[Callable[..., Server]]:
    import uvicorn

    started: list[Server] = []

    def start(app: Any, host: str = "127.0.0.1") -> Server:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
        config = uvicorn.Config(app, lifespan="off", log_level="error", access_log=False)
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True
        )
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.started, "uvicorn did not start"

        def stop() -> None:
            server.should_exit = True
            thread.join(10)
            sock.close()

        handle = Server(host, sock.getsockname()[1], stop)
        started.append(handle)
        return handle

    yield start
    for server in started:
        server.stop()


def echo_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """Answers with the propagation headers it received, as JSON."""
    body = json.dumps(
        {
            "baggage": environ.get("HTTP_BAGGAGE"),
            "traceparent": environ.get("HTTP_TRACEPARENT"),
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


@pytest.fixture
def echo_servers(wsgi_server: Callable[..., Server]) -> tuple[Server, Server]:
    """(allowed, outside): echo servers on 127.0.0.1 and 127.0.0.2."""
    return wsgi_server(echo_app, "127.0.0.1"), wsgi_server(echo_app, "127.0.0.2")


def opentelemetry_client_instrumentor(client: str) -> Any:
    """OpenTelemetry's own instrumentor for one of the HTTP clients the tests drive."""
    if client == "requests":
        from opentelemetry.instrumentation.requests import RequestsInstrumentor

        return RequestsInstrumentor()
    if client.startswith("httpx"):
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        return HTTPXClientInstrumentor()
    if client == "urllib3":
        from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor

        return URLLib3Instrumentor()
    if client == "aiohttp":
        from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor

        return AioHttpClientInstrumentor()
    from opentelemetry.instrumentation.urllib import URLLibInstrumentor

    return URLLibInstrumentor()
