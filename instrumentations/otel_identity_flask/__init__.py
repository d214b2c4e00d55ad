"""The Flask-Login bridge: ``flask_login.current_user`` is valid on every hop of a request.

    from otel_identity_flask import FlaskIdentityInstrumentor

    oi.set_user_resolver(lambda identity: Session().get(User, int(identity.user_id)))
    FlaskIdentityInstrumentor().instrument(tenant_of=lambda user: user.current_tenant)
    # or, for one app:  FlaskIdentityInstrumentor.instrument_app(app, tenant_of=...)

When Flask-Login has loaded a user in a request (session, remember cookie, request loader or
``login_user``), the request's identity is set from it (``user.get_id()``, and the tenant from
``tenant_of(user)``) for the rest of the request, so every hop it makes carries it. On a hop
with an identity but no request context of its own (a thread-pool branch, say, with
``otel_identity_threading`` on), ``flask_login.current_user`` is the user the otel-identity
resolver rebuilds in that hop's thread, instead of ``None``. Inside requests, Flask-Login
behaves exactly as before.
"""

from __future__ import annotations

# Without its extra this package cannot work: say which extra, instead of a bare "No module
# named 'flask'". A ModuleNotFoundError (not a plain ImportError) so that
# opentelemetry-instrument skips this entry point quietly when the library is absent.
try:
    import flask
    import flask_login
except ModuleNotFoundError as exc:
    raise ModuleNotFoundError(
        f"otel_identity_flask needs Flask and Flask-Login ({exc.name!r} is not installed): "
        "pip install 'otel-identity[flask]'",
        name=exc.name,
    ) from exc

from otel_identity_flask._instrumentor import FlaskIdentityInstrumentor

__all__ = ["FlaskIdentityInstrumentor"]
del flask, flask_login  # imported above only to name the extra when one is missing
