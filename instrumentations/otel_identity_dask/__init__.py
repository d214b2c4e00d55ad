"""Dask (``distributed``): every task runs under the identity it was submitted with, only that.

    from otel_identity_dask import DaskIdentityInstrumentor

    DaskIdentityInstrumentor().instrument()          # in the client process only

    with oi.use_identity(user_id="u-1", tenant_id="acme"):
        future = client.submit(report, 42)           # the task carries the identity

    def report(n):                                   # on a worker, unchanged user code
        oi.get_identity()                            # Identity(user_id='u-1', tenant_id='acme')
        oi.current_user                              # resolved on the worker, for this task

Each task is a ``task`` hop: the inbound policy applies (a signed identity is verified on the
worker), the hop is counted, and a task submitted without identity records
``identity.missing`` on the first span it starts. The identity is part of a pure task's key,
so two tenants making the same call get their own results. Workers get the client's
``OTEL_IDENTITY_*`` settings through a worker plugin (``settings_plugin()`` for async clients).
"""

from __future__ import annotations

from otel_identity_dask._instrumentor import DaskIdentityInstrumentor, settings_plugin

__all__ = ["DaskIdentityInstrumentor", "settings_plugin"]
