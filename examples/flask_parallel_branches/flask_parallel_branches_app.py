"""A Flask workflow that fans a request out to 8 parallel branches on a ThreadPoolExecutor.

Each branch opens its own database session and reads ``current_user.current_tenant``: the
incident otel-identity was born from. Without the library, ``current_user`` is ``None`` in
every branch; with it, each branch gets the user rebuilt in its own thread and session.

    python flask_parallel_branches_app.py --port 5000            # otel-identity on
    python flask_parallel_branches_app.py --port 5000 --off      # the original failure
"""

from __future__ import annotations

import argparse
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import flask_login
from flask import Flask, jsonify, request
from flask_login import LoginManager, UserMixin, current_user, login_user
from sqlalchemy import ForeignKey, String, create_engine, func, select
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    mapped_column,
    object_session,
    scoped_session,
    sessionmaker,
)

import otel_identity as oi

BRANCHES = 8


class Base(DeclarativeBase):
    pass


class User(UserMixin, Base):  # type: ignore[misc]  # flask_login ships no types
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    current_tenant: Mapped[str] = mapped_column(String(50))


class Document(Base):
    __tablename__ = "documents"
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant: Mapped[str] = mapped_column(String(50))
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))


def create_app(*, identity: bool = True, database: str | None = None) -> Flask:
    """The app; ``identity=False`` runs it exactly as it was before otel-identity."""
    if database is None:
        database = os.path.join(tempfile.mkdtemp(prefix="branches-"), "app.db")
    engine = create_engine(f"sqlite:///{database}")
    Base.metadata.create_all(engine)
    # One session per thread: the request has its own, and so does every branch.
    Session = scoped_session(sessionmaker(engine, expire_on_commit=False))  # noqa: N806
    with Session() as db:
        if db.scalar(select(func.count()).select_from(User)) == 0:
            db.add_all(
                [
                    User(id=1, name="alice", current_tenant="acme"),
                    User(id=2, name="bob", current_tenant="globex"),
                    *(Document(tenant="acme", owner_id=1) for _ in range(3)),
                    *(Document(tenant="globex", owner_id=2) for _ in range(5)),
                ]
            )
            db.commit()
    Session.remove()

    app = Flask(__name__)
    app.secret_key = os.urandom(16)
    login_manager = LoginManager(app)
    pool = ThreadPoolExecutor(4, thread_name_prefix="branch")
    app.extensions["branches"] = {"pool": pool, "Session": Session}

    @login_manager.user_loader  # type: ignore[untyped-decorator]
    def load_user(user_id: str) -> User | None:
        return Session().get(User, int(user_id))

    if identity:
        from otel_identity_flask import FlaskIdentityInstrumentor
        from otel_identity_threading import ThreadingIdentityInstrumentor

        # Rebuild the user in the hop's own thread, from that thread's own session.
        oi.set_user_resolver(lambda ident: Session().get(User, int(ident.user_id or 0)))
        ThreadingIdentityInstrumentor().instrument()
        FlaskIdentityInstrumentor.instrument_app(app, tenant_of=lambda user: user.current_tenant)

    @app.teardown_appcontext
    def close_session(_exc: BaseException | None) -> None:
        Session.remove()

    @app.post("/login")
    def login() -> Any:
        user = Session().scalar(select(User).where(User.name == request.form["name"]))
        if user is None:
            return jsonify(error="unknown user"), 401
        login_user(user)
        return jsonify(user=user.name, tenant=user.current_tenant)

    def branch(number: int) -> dict[str, Any]:
        try:
            tenant = current_user.current_tenant  # the line that used to fail
            db = Session()
            documents = db.scalar(
                select(func.count()).select_from(Document).where(Document.tenant == tenant)
            )
            own_session = object_session(flask_login.current_user._get_current_object()) is db
            return {
                "branch": number,
                "tenant": tenant,
                "documents": documents,
                "own_session": own_session,
            }
        except Exception as exc:
            return {"branch": number, "error": f"{type(exc).__name__}: {exc}"}
        finally:
            Session.remove()

    @app.get("/branches")
    @flask_login.login_required  # type: ignore[untyped-decorator]
    def branches() -> Any:
        results = list(pool.map(branch, range(BRANCHES)))
        failed = any("error" in r for r in results)
        return jsonify(user=current_user.name, branches=results), 500 if failed else 200

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--off", action="store_true", help="run without otel-identity")
    args = parser.parse_args()
    identity = not args.off and os.environ.get("OTEL_IDENTITY_EXAMPLE", "on") != "off"
    app = create_app(identity=identity)
    print(f"otel-identity {'on' if identity else 'OFF'}: http://{args.host}:{args.port}")
    app.run(host=args.host, port=args.port)


if __name__ == "__main__":
    main()
