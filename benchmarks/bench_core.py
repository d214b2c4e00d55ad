"""Core hop cost: plain OpenTelemetry baggage against otel-identity, measured in one run.

    python benchmarks/bench_core.py [--quick]

Send side:    plain = set 2 baggage entries + W3C inject;  ours = set_identity + inject
Receive side: plain = W3C extract + read 2 entries;         ours = extract(hop=...) + get_identity
Both use the same global propagator (tracecontext + baggage, the OTel default) and the same
two members (user.id, tenant.id). Ratios below 1.0 mean otel-identity is faster.
"""

from __future__ import annotations

import sys
import timeit

from opentelemetry import baggage, propagate
from opentelemetry.context import Context

import otel_identity as oi


def best_of(fn: object, number: int, repeat: int = 7) -> float:
    """Best per-call time in microseconds (the min is the least noisy estimator)."""
    times = timeit.repeat(fn, number=number, repeat=repeat)  # type: ignore[arg-type]
    return min(times) / number * 1e6


def main() -> None:
    quick = "--quick" in sys.argv
    n = 2_000 if quick else 20_000
    empty = Context()

    def plain_send() -> None:
        ctx = baggage.set_baggage("user.id", "u-42", empty)
        ctx = baggage.set_baggage("tenant.id", "acme", ctx)
        propagate.inject({}, context=ctx)

    def ours_send() -> None:
        ctx = oi.set_identity(user_id="u-42", tenant_id="acme", context=empty)
        oi.inject({}, context=ctx)

    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=oi.set_identity(user_id="u-42", tenant_id="acme"))

    def plain_receive() -> None:
        ctx = propagate.extract(carrier, context=empty)
        baggage.get_baggage("user.id", ctx)
        baggage.get_baggage("tenant.id", ctx)

    def ours_receive() -> None:
        oi.get_identity(oi.extract(carrier, hop="manual", context=empty))

    # Distinct headers (a new user on every call) defeat the memo: the honest worst case.
    unique = []
    for i in range(n * 8):
        c: dict[str, str] = {}
        propagate.inject(c, context=oi.set_identity(user_id=f"user-{i}", tenant_id="acme"))
        unique.append(c)
    plain_iter = iter(unique * 8)
    ours_iter = iter(unique * 8)

    def plain_receive_unique() -> None:
        ctx = propagate.extract(next(plain_iter), context=empty)
        baggage.get_baggage("user.id", ctx)
        baggage.get_baggage("tenant.id", ctx)

    def ours_receive_unique() -> None:
        oi.get_identity(oi.extract(next(ours_iter), hop="manual", context=empty))

    oi.set_user_resolver(lambda identity: {"id": identity.user_id}, cache_ttl=300)
    ctx = oi.set_identity(user_id="u-42", tenant_id="acme")
    oi.get_current_user(oi.receive(ctx, hop="thread"))  # warm the cache

    def cache_hit() -> None:
        oi.get_current_user(oi.receive(ctx, hop="thread"))

    rows = []
    for label, plain, ours in [
        ("send (set + inject)", plain_send, ours_send),
        ("receive (extract + read)", plain_receive, ours_receive),
    ]:
        p = best_of(plain, n)
        o = best_of(ours, n)
        rows.append((label, p, o))
    total_plain = sum(r[1] for r in rows)
    total_ours = sum(r[2] for r in rows)
    rows.append(("inject + extract, total", total_plain, total_ours))
    rows.append(
        (
            "receive, every header new",
            best_of(plain_receive_unique, n, repeat=5),
            best_of(ours_receive_unique, n, repeat=5),
        )
    )
    print(f"{'operation':<28}{'plain OTel µs':>15}{'otel-identity µs':>18}{'ratio':>8}")
    for label, p, o in rows:
        print(f"{label:<28}{p:>15.2f}{o:>18.2f}{o / p:>8.2f}")
    hit = best_of(cache_hit, n)
    print(f"{'resolver cache hit (new hop)':<28}{'':>15}{hit:>18.2f}")
    print(
        f"goal: inject+extract ratio <= 1.0 -> {'met' if total_ours <= total_plain else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
