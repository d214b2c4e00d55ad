"""One Ray actor scoring requests from several tenants, each call under its own caller.

A scoring service keeps one model per tenant in a long-lived actor. Requests from different
tenants reach the same actor concurrently; ``score`` takes **no tenant argument**: it picks
the model from the identity the call carries, and ``current_user`` is resolved in the actor,
per call, by the resolver the driver configured (``OTEL_IDENTITY_RESOLVER``). A call made
without identity is refused rather than scored with the previous caller's model.

    python ray_tenant_scoring_app.py
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import ray
from otel_identity_ray import RayIdentityInstrumentor

import otel_identity as oi

HERE = Path(__file__).resolve().parent
USERS = {"alice": ("Alice", "acme"), "bob": ("Bob", "globex"), "carol": ("Carol", "initech")}
MODELS = {"acme": (2.0, 1.0), "globex": (-1.0, 5.0), "initech": (0.5, 0.0)}  # weight, bias


def load_user(identity: oi.Identity) -> dict[str, str] | None:
    """The resolver: runs in the actor's process, once per call (a user directory stands in)."""
    entry = USERS.get(identity.user_id or "")
    return {"id": identity.user_id or "", "name": entry[0]} if entry else None


class Scorer:
    """Per-tenant models in one actor; plain code: the caller is whoever this call came from."""

    def score(self, x: float) -> dict[str, Any]:
        identity = oi.get_identity()
        if identity is None or identity.tenant_id not in MODELS:
            return {"error": "no tenant in identity; refusing to score"}
        weight, bias = MODELS[identity.tenant_id]
        user = oi.get_current_user()
        return {
            "tenant": identity.tenant_id,
            "by": user["name"] if user else None,
            "score": weight * x + bias,
        }


def start_scorer() -> Any:
    """The actor; ``@ray.remote`` runs after ``instrument()`` so its methods carry identity."""
    return ray.remote(Scorer).options(max_concurrency=4).remote()


def handle_request(scorer: Any, user_id: str, x: float) -> dict[str, Any]:
    """What a request handler does after authenticating ``user_id``."""
    tenant = USERS[user_id][1]
    with oi.use_identity(user_id=user_id, tenant_id=tenant):
        return dict(ray.get(scorer.score.remote(x)))


def serve(scorer: Any, requests: list[tuple[str, float]]) -> list[dict[str, Any]]:
    """Many callers at once, as a web front end's threads would be."""
    with ThreadPoolExecutor(max_workers=6) as pool:
        return list(pool.map(lambda r: handle_request(scorer, *r), requests))


def start_ray() -> None:
    # Configured once, in the driver: ray.init hands OTEL_IDENTITY_* to the job's workers.
    os.environ.setdefault("OTEL_IDENTITY_RESOLVER", "ray_tenant_scoring_app:load_user")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    RayIdentityInstrumentor().instrument()
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        object_store_memory=80 * 1024 * 1024,
        runtime_env={"env_vars": {"PYTHONPATH": str(HERE)}},  # workers import the resolver
        log_to_driver=False,
    )


def main() -> None:
    start_ray()
    scorer = start_scorer()
    requests = [(user, float(i)) for i in range(3) for user in USERS]
    for (user, x), response in zip(requests, serve(scorer, requests), strict=True):
        print(user, x, response)
    print("no identity:", ray.get(scorer.score.remote(1.0)))
    ray.shutdown()


if __name__ == "__main__":
    main()
