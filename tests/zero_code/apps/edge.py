"""The ``edge`` web service: Flask + Flask-Login, calling the ``workflows`` gRPC service.

No identity code: Flask-Login authenticates (a bearer token, through a request loader), a
thread pool fans the work out, and a gRPC call goes on. Run as
``opentelemetry-instrument python edge.py WORKFLOWS_TARGET PORT_FILE``.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import flask
import flask_login
import grpc
import zc_users
from werkzeug.serving import make_server

app = flask.Flask("edge")
app.secret_key = "zero-code-test"
login = flask_login.LoginManager(app)
POOL = ThreadPoolExecutor(2, thread_name_prefix="edge-branch")
channel = grpc.insecure_channel(sys.argv[1])
build = channel.unary_unary("/zc.Workflows/Build")


@login.request_loader
def from_token(request: flask.Request) -> zc_users.User | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    user_id = zc_users.TOKENS.get(token) if scheme == "Bearer" else None
    return zc_users.load(user_id) if user_id else None


def branch(_section: str) -> dict[str, str | None]:
    user = flask_login.current_user  # outside the request: the resolver's user, this thread
    here = threading.current_thread().name
    return {"thread": here, **user.describe()} if user else {"thread": here, "user": None}


@app.get("/report")
@flask_login.login_required
def report() -> flask.Response:
    user = flask_login.current_user
    branches = list(POOL.map(branch, ["sales", "stock"]))
    workflows = json.loads(build(b"", timeout=10))
    return flask.jsonify({"edge": user.describe(), "branches": branches, "workflows": workflows})


def main() -> None:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    with open(sys.argv[2], "w", encoding="utf-8") as handle:
        handle.write(str(server.server_port))
    server.serve_forever()


if __name__ == "__main__":
    main()
