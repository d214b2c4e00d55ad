"""Ray: every remote function call and actor method call runs under its caller's identity.

    from otel_identity_ray import RayIdentityInstrumentor

    RayIdentityInstrumentor().instrument()     # in the driver, before ray.init and @ray.remote

    @ray.remote
    class Scorer:
        def score(self, x):
            return oi.get_identity().tenant_id     # this call's caller, never the previous one

    with oi.use_identity(user_id="u-1", tenant_id="acme"):
        ray.get(scorer.score.remote(1))            # "acme"

Each call is a ``task`` hop on the worker: the inbound policy applies (a signed identity is
verified there), the hop is counted, ``current_user`` is resolved in the worker, and a call
made without identity records ``identity.missing`` on the first span it starts. Workers get
the driver's ``OTEL_IDENTITY_*`` settings through the job's ``runtime_env``. Ray offers no
public per-call hook; the private entry points used are all in ``_internals``.
"""

from __future__ import annotations

from otel_identity_ray._instrumentor import RayIdentityInstrumentor

__all__ = ["RayIdentityInstrumentor"]
