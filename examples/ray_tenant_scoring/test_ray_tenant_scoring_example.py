"""The example, end to end: a real local Ray, one actor, interleaved callers of three tenants."""

from __future__ import annotations

import importlib
import os
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import ray
from otel_identity_ray import RayIdentityInstrumentor

HERE = Path(__file__).resolve().parent
NAME = "ray_tenant_scoring_app"


@pytest.fixture(scope="module")
def example() -> Iterator[tuple[ModuleType, Any]]:
    sys.path.insert(0, str(HERE))
    saved = os.environ.get("OTEL_IDENTITY_RESOLVER")
    try:
        module = importlib.import_module(NAME)
        module.start_ray()
        yield module, module.start_scorer()
    finally:
        ray.shutdown()
        RayIdentityInstrumentor().uninstrument()
        sys.path.remove(str(HERE))
        if saved is None:  # start_ray() set it for the driver: later tests must not see it
            os.environ.pop("OTEL_IDENTITY_RESOLVER", None)


def test_one_actor_scores_each_callers_request_with_its_own_tenants_model(
    example: tuple[Any, Any],
) -> None:
    module, scorer = example
    rng = random.Random(3)
    requests = [(rng.choice(list(module.USERS)), float(rng.randrange(10))) for _ in range(60)]
    responses = module.serve(scorer, requests)
    for (user, x), response in zip(requests, responses, strict=True):
        name, tenant = module.USERS[user]
        weight, bias = module.MODELS[tenant]
        assert response == {"tenant": tenant, "by": name, "score": weight * x + bias}


def test_a_call_without_identity_is_refused(example: tuple[Any, Any]) -> None:
    _module, scorer = example
    assert ray.get(scorer.score.remote(1.0), timeout=60) == {
        "error": "no tenant in identity; refusing to score"
    }
