"""A no-op task on Dask and Ray: submit-to-result time bare (a) and with identity (c).

    .venv/bin/python benchmarks/bench_tasks.py [--tasks 400] [--rounds 7] [--signed]

Each engine runs locally on loopback (Dask: a LocalCluster with one worker process of one
thread; Ray: ``ray.init(num_cpus=1)``). A round submits ``--tasks`` no-op tasks one after the
other, each waited for before the next (``client.submit(noop).result()``,
``ray.get(noop.remote())``), so the figure is one task's full round trip through scheduler
and worker. Phases alternate round by round:
  a (bare):     the instrumentor off, no identity (Ray: a remote function never wrapped);
  c (identity): the instrumentor on, each task submitted under an identity, continued on the
                worker as a counted ``task`` hop (``--signed``: HMAC-signed at submit, verified
                on the worker).
The median round counts; printed as microseconds per task and (c-a)/a.

A task's round trip through a local engine varies by more than identity adds (Dask's by
about a millisecond from round to round here), so the same run also measures identity's own
steps in one process, CPU time per task over 20,000 tasks, median of the rounds: for Dask
the caller's ``TaskCall`` (capture and digest), pickling it instead of the bare function, and
the worker's unpickling and hop (extract, attach, detach); for Ray the caller's carrier,
pickling it as the extra keyword, and the worker's wrapper (extract, attach, detach).
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import time
from collections.abc import Callable

import otel_identity as oi


def noop(i: int) -> int:
    return i


def noop_too(i: int) -> int:  # the same body as a second Ray function, wrapped only in c
    return i


def _per_task(run: Callable[[int], object], tasks: int) -> float:
    start = time.perf_counter()
    for i in range(tasks):
        run(i)
    return (time.perf_counter() - start) / tasks


def _switch(instrumentor: object) -> tuple[Callable[[], None], Callable[[], None]]:
    """on(), off(): the instrumentor turned on or off, quietly if it already is."""

    def on() -> None:
        if not instrumentor.is_instrumented_by_opentelemetry:  # type: ignore[attr-defined]
            instrumentor.instrument()  # type: ignore[attr-defined]

    def off() -> None:
        if instrumentor.is_instrumented_by_opentelemetry:  # type: ignore[attr-defined]
            instrumentor.uninstrument()  # type: ignore[attr-defined]

    return on, off


def _rounds(
    bare: Callable[[int], object],
    identity: Callable[[int], object],
    on: Callable[[], None],
    off: Callable[[], None],
    tasks: int,
    rounds: int,
) -> tuple[float, float]:
    a: list[float] = []
    c: list[float] = []
    for r in range(rounds + 1):  # round 0 warms both paths up and is not counted
        for phase in ("a", "c") if r % 2 else ("c", "a"):
            if phase == "a":
                off()
                took = _per_task(bare, tasks)
            else:
                on()
                with oi.use_identity(user_id="u-1", tenant_id="acme", roles=("analyst",)):
                    took = _per_task(identity, tasks)
            if r:
                (a if phase == "a" else c).append(took)
    return statistics.median(a), statistics.median(c)


def bench_dask(tasks: int, rounds: int) -> tuple[float, float]:
    from distributed import Client, LocalCluster
    from otel_identity_dask import DaskIdentityInstrumentor

    instrumentor = DaskIdentityInstrumentor()
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
            worker_dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):

        def run(i: int) -> object:
            return client.submit(noop, i, pure=False).result()

        on, off = _switch(instrumentor)
        result = _rounds(run, run, on, off, tasks, rounds)
        off()
        return result


def bench_ray(tasks: int, rounds: int) -> tuple[float, float]:
    import ray
    from otel_identity_ray import RayIdentityInstrumentor

    instrumentor = RayIdentityInstrumentor()
    on, off = _switch(instrumentor)
    on()
    ray.init(
        num_cpus=1,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        object_store_memory=80 * 1024 * 1024,
        log_to_driver=False,
    )
    try:
        off()
        bare = ray.remote(noop)
        ray.get(bare.remote(0))  # exported as it is: never wrapped
        on()
        wrapped = ray.remote(noop_too)
        ray.get(wrapped.remote(0))  # exported with the identity wrapper
        return _rounds(
            lambda i: ray.get(bare.remote(i)),
            lambda i: ray.get(wrapped.remote(i)),
            on,
            off,
            tasks,
            rounds,
        )
    finally:
        ray.shutdown()
        off()


def _cpu_per_task(run: Callable[[int], object], tasks: int) -> float:
    start = time.process_time()
    for i in range(tasks):
        run(i)
    return (time.process_time() - start) / tasks


ENGINES = (("dask", bench_dask), ("ray", bench_ray))


def steps(rounds: int, tasks: int = 20_000) -> dict[str, float]:
    """Identity's own per-task work, in process: (with identity) - (bare), seconds."""
    import cloudpickle
    from otel_identity_dask._instrumentor import _task_call
    from otel_identity_ray._task import PARAM, carrier_of_current, identity_function

    wrapped = identity_function(noop)
    assert wrapped is not None

    def dask_bare(i: int) -> object:
        return cloudpickle.loads(cloudpickle.dumps(noop))(i)

    def dask_identity(i: int) -> object:
        return cloudpickle.loads(cloudpickle.dumps(_task_call(noop)))(i)

    def ray_bare(i: int) -> object:
        return noop(*cloudpickle.loads(cloudpickle.dumps((i,))))

    def ray_identity(i: int) -> object:
        args, kwargs = cloudpickle.loads(cloudpickle.dumps(((i,), {PARAM: carrier_of_current()})))
        return wrapped(*args, **kwargs)

    added: dict[str, list[float]] = {"dask": [], "ray": []}
    with oi.use_identity(user_id="u-1", tenant_id="acme", roles=("analyst",)):
        for _ in range(rounds):
            for name, bare, identity in (
                ("dask", dask_bare, dask_identity),
                ("ray", ray_bare, ray_identity),
            ):
                a = _cpu_per_task(bare, tasks)
                added[name].append(_cpu_per_task(identity, tasks) - a)
    return {name: statistics.median(values) for name, values in added.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--signed", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if args.signed:  # set before the engines start: their workers verify with the same key
        os.environ["OTEL_IDENTITY_SIGNING_KEYS"] = "k1:" + base64.b64encode(os.urandom(32)).decode()
    print(
        f"{args.tasks} sequential no-op tasks per round, {args.rounds} rounds, median round;"
        f" identity {'signed (HMAC) and verified' if args.signed else 'unsigned'}"
    )
    print(f"{'engine':<6} {'a bare µs':>10} {'c identity µs':>14} {'c-a µs':>8} {'(c-a)/a':>8}")
    results = {name: bench(args.tasks, args.rounds) for name, bench in ENGINES}
    work = steps(args.rounds)
    for name, (a, c) in results.items():
        print(
            f"{name:<6} {a * 1e6:>10.0f} {c * 1e6:>14.0f} {(c - a) * 1e6:>8.0f} {(c - a) / a:>8.1%}"
        )
    print("identity's own steps per task (CPU, caller + worker, in process):")
    for name, seconds in work.items():
        print(f"{name:<6} {seconds * 1e6:>8.1f} µs, {seconds / results[name][0]:.2%} of (a)")


if __name__ == "__main__":
    main()
