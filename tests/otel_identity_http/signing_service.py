"""One service of the multi-process signing tests: a real WSGI server on 127.0.0.1.

    OTEL_IDENTITY_KEYS_FILE=... SERVICE_NEXT=http://127.0.0.1:P/ python signing_service.py

Prints its port on the first line of stdout, then serves until stdin closes. Each request is
an ``http.server`` hop through ``IdentityWSGIMiddleware``; ``X-Login: user`` is the edge's own
authentication (an auth source). The handler answers what it admitted (user, verified,
reject reason) and, when ``SERVICE_NEXT`` is set, what the next service answered to the call
it made with ``oi.inject``: as is, or under ``?as=<user>`` (its own ``use_identity``).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, make_server

import requests
from otel_identity_http import IdentityWSGIMiddleware, RequestView

import otel_identity as oi


def login(view: RequestView) -> oi.Identity | None:
    user = view.header("x-login")
    return oi.Identity(user_id=user, tenant_id="acme") if user else None


def _call_next(url: str, query: dict[str, list[str]]) -> Any:
    headers: dict[str, str] = {}
    hop = query.get("hop", ["http.client"])[0]
    if "as" in query:
        with oi.use_identity(user_id=query["as"][0], tenant_id="acme"):
            oi.inject(headers, hop=hop)
    else:
        oi.inject(headers, hop=hop)
    response = requests.get(url, headers=headers, timeout=10)
    return {"answer": response.json(), "sent": headers.get("baggage")}


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    identity = oi.get_identity()
    state = oi.hop_state()
    body: dict[str, Any] = {
        "user": identity.user_id if identity else None,
        "roles": list(identity.roles) if identity else [],
        "verified": bool(identity and identity.verified),
        "reason": getattr(state, "reason", None),
    }
    nxt = os.environ.get("SERVICE_NEXT")
    if nxt:
        body["next"] = _call_next(nxt, parse_qs(environ.get("QUERY_STRING", "")))
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


def main() -> None:
    server = make_server(
        "127.0.0.1", 0, IdentityWSGIMiddleware(app, auth=[login]), handler_class=_Quiet
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.server_address[1], flush=True)
    sys.stdin.read()  # the test closes stdin to stop the service
    server.shutdown()


if __name__ == "__main__":
    main()
